"""norc-s3: :class:`S3LogStore` keeps finished logs in Amazon S3 or any S3-compatible store.

Installed, it registers the log store ``s3``. Executors still write each log to their
local log directory first; once an instance has finished, Norc hands the file to
:meth:`S3LogStore.save` in a background thread and records the returned
``s3://bucket/key`` as the instance's ``log_location``. Any host can then read the log
(``norc logs ID``, :meth:`norc.Norc.logs`): the local file if it is there, else
:meth:`S3LogStore.open`.

Object key = ``prefix`` + the log key: ``<installation>/tasks/<Type>/<name>/<name>-<id>``
for an instance, ``<installation>/executors/executor-<id>`` (or ``schedulers/...``) for a
daemon's own log. The installation id is the database's own uuid (``norc_installation``)
and ids are never reused, so databases sharing a bucket and prefix never overwrite one
another's logs, and a new database in place of an old one starts a tree of its own.
Logs uploaded before schema revision 0005 keep their keys (the seed's layout, without the
installation id): the instance's ``log_location`` names them.
Credentials never appear in settings: boto3 finds them through its standard chain.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import boto3
import structlog
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from norc.abc import LogStore
from norc.aws import AWSSettings
from norc.errors import ConfigurationError, InvalidLogKey, NorcError
from norc.logs import check_key
from norc.plugin_settings import number, one_of, optional, refuse, text, whole_number
from norc.pluginmarkers import hookimpl
from norc.registry import PluginRegistry

# InvalidLogKey and check_key are the core's (norc.errors, norc.logs), named here as
# well for code written when they were this plugin's own.
__all__ = [
    "InvalidLogKey",
    "MiB",
    "S3LogError",
    "S3LogStore",
    "S3Settings",
    "check_key",
    "norc_register_types",
]

log = structlog.get_logger("norc.s3")

MiB = 1024 * 1024
#: S3's smallest part (every part of a multipart upload but the last is at least this).
MIN_PART_SIZE = 5 * MiB
DEFAULT_PREFIX = "norc_logs/"
DEFAULT_TRIES = 3
DEFAULT_MULTIPART_THRESHOLD = 8 * MiB
#: The largest ``backoff`` accepted (the setting no longer has an effect).
MAX_PAUSE = 30.0

_MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class S3LogError(NorcError):
    """Reading or writing a log in S3 failed; the message names the bucket and key."""


def _prefix(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A prefix is empty, or a safe relative key (:func:`check_key`)."""
    if not isinstance(value, str):
        refuse(instance, attribute.name, "a string", value)
    if value:
        try:
            check_key(value)
        except InvalidLogKey as exc:
            raise ConfigurationError(f"S3 log store setting 'prefix': {exc}") from None


@attrs.frozen(kw_only=True)
class S3Settings(AWSSettings):
    """The S3 log store's settings (see :meth:`S3LogStore.validate_settings`)."""

    kind = "S3 log store"

    bucket: str = attrs.field(
        validator=text(
            r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]",
            "a bucket name (3-63 lowercase letters, digits, '.' or '-')",
        )
    )
    prefix: str | None = attrs.field(default=None, validator=optional(_prefix))
    addressing_style: str | None = attrs.field(
        default=None, validator=optional(one_of("auto", "path", "virtual"))
    )
    tries: int | None = attrs.field(default=None, validator=optional(whole_number(1, 20)))
    #: Accepted for configurations written before botocore's retry modes took over the
    #: pauses; it has no effect (a warning says so).
    backoff: float | None = attrs.field(
        default=None, validator=optional(number(0, MAX_PAUSE, f"seconds from 0 to {MAX_PAUSE:g}"))
    )
    multipart_threshold: int | None = attrs.field(
        default=None,
        validator=optional(
            whole_number(
                MIN_PART_SIZE,
                what=f"a whole number of bytes >= {MIN_PART_SIZE} (5 MiB, S3's smallest part)",
            )
        ),
    )


class S3LogStore(LogStore):
    """Keeps finished logs as objects in one S3 bucket. Settings: :meth:`validate_settings`."""

    store_name = "s3"

    def __init__(self, *, settings: Mapping[str, Any], log_dir: Path) -> None:
        super().__init__(settings=settings, log_dir=log_dir)
        config = S3Settings.parse(settings)
        self.config = config
        self.bucket: str = config.bucket
        self.prefix: str = DEFAULT_PREFIX if config.prefix is None else config.prefix
        self.tries: int = config.tries or DEFAULT_TRIES
        if config.backoff is not None:
            log.warning(
                "S3 log store setting 'backoff' is ignored: botocore's standard retry mode"
                " chooses the pauses",
                bucket=self.bucket,
            )
        threshold = config.multipart_threshold or DEFAULT_MULTIPART_THRESHOLD
        # Parts as large as the threshold: a log just over it goes in two parts.
        self.transfer = TransferConfig(multipart_threshold=threshold, multipart_chunksize=threshold)
        self._lock = threading.Lock()
        self._client: Any = None

    @classmethod
    def validate_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Check S3 log store settings; raise ``ConfigurationError`` naming the bad key.

        - ``bucket`` (required): the bucket, which must exist.
        - ``prefix``: prepended to every log key (default ``norc_logs/``); no leading ``/``.
        - ``region``: AWS region; default: boto3's chain.
        - ``endpoint_url``: an S3-compatible store (MinIO, Ceph, R2...).
        - ``addressing_style``: ``auto`` (default), ``path`` or ``virtual``.
        - ``tries``: attempts in all per request on transient errors (default 3), made
          by botocore's standard retry mode.
        - ``backoff``: accepted and ignored (botocore chooses the pauses: exponential,
          with jitter).
        - ``multipart_threshold``: bytes from which a log goes up in parts of this size
          (default 8 MiB, at least 5 MiB, S3's smallest part).

        Keys that look like credentials are refused: they only come from boto3's chain.
        """
        return S3Settings.parse(settings).given()

    # -- the LogStore contract -------------------------------------------------------

    def object_key(self, key: str) -> str:
        """The S3 object key of log key ``key`` (checked by :func:`check_key`)."""
        return self.prefix + check_key(key)

    def save(self, key: str, local_path: Path) -> str:
        """Upload the log; return ``s3://bucket/object-key``.

        Transient failures (network, throttling, 5xx) are retried by botocore, ``tries``
        attempts in all per request; the last failure, or any other, raises
        :class:`S3LogError`. Logs from ``multipart_threshold`` bytes on go up in parts.
        """
        object_key = self.object_key(key)
        client = self._s3()
        with self._errors(f"upload {local_path} to", object_key):
            client.upload_file(
                str(local_path),
                self.bucket,
                object_key,
                Config=self.transfer,
                ExtraArgs={"ContentType": "text/plain; charset=utf-8"},
            )
        return f"s3://{self.bucket}/{object_key}"

    def open(self, key: str) -> bytes | None:
        """The stored log's bytes; None if there is no such object.

        A missing bucket, refused access and the like raise :class:`S3LogError` naming
        bucket and key: they are misconfiguration, not a missing log.
        """
        object_key = self.object_key(key)
        client = self._s3()
        with self._errors("read", object_key):
            try:
                answer = client.get_object(Bucket=self.bucket, Key=object_key)
            except ClientError as exc:
                if _code(exc) in _MISSING_OBJECT_CODES:
                    return None
                raise
            data: bytes = answer["Body"].read()
        return data

    # -- internals -------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str, object_key: str) -> Iterator[None]:
        """Raise boto3's errors (after botocore's retries) as :class:`S3LogError`, naming
        the object and, if the error was retried, the number of tries."""
        try:
            yield
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            where = f"s3://{self.bucket}/{object_key}"
            tries = _tries(exc)
            after = f" after {tries} tries" if tries > 1 else ""
            raise S3LogError(f"cannot {action} {where}{after}: {_describe(exc)}") from exc

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                style = self.config.addressing_style
                try:
                    # A session of our own: boto3's default session is not thread-safe
                    # and uploads run in Norc's background threads.
                    self._client = boto3.session.Session().client(
                        "s3",
                        **self.config.client_options(),
                        config=Config(
                            # botocore retries what is transient (network errors,
                            # throttling, 5xx), pausing exponentially with jitter;
                            # ``tries`` counts the first attempt too.
                            retries={"mode": "standard", "total_max_attempts": self.tries},
                            connect_timeout=10,
                            read_timeout=60,
                            s3={"addressing_style": style} if style else None,
                        ),
                    )
                except BotoCoreError as exc:
                    raise ConfigurationError(
                        f"cannot use S3 bucket {self.bucket!r}: {exc}"
                    ) from None
            return self._client


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _client_error(exc: BaseException) -> ClientError | None:
    """The ClientError behind ``exc``: boto3's upload_file wraps it in S3UploadFailedError."""
    for cause in _chain(exc):
        if isinstance(cause, ClientError):
            return cause
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during (bounded: chains can loop)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _describe(exc: BaseException) -> str:
    client_error = _client_error(exc)
    if client_error is not None:
        error = client_error.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', client_error)}"
    return str(exc)


def _tries(exc: BaseException) -> int:
    """How many attempts botocore made of the request that failed (1 if it was not retried)."""
    client_error = _client_error(exc)
    if client_error is None:
        return 1
    meta = client_error.response.get("ResponseMetadata", {})
    return 1 + int(meta.get("RetryAttempts", 0) or 0)


@hookimpl
def norc_register_types(registry: PluginRegistry) -> None:
    """Provide the ``s3`` log store."""
    registry.add_log_store(S3LogStore)
