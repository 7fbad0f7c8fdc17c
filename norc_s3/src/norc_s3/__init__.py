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

import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import boto3
import structlog
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from norc.abc import LogStore
from norc.errors import ConfigurationError, NorcError
from norc.pluginmarkers import hookimpl
from norc.registry import PluginRegistry

__all__ = ["InvalidLogKey", "MiB", "S3LogError", "S3LogStore", "check_key", "norc_register_types"]

log = structlog.get_logger("norc.s3")

T = TypeVar("T")

MiB = 1024 * 1024
#: S3's smallest part (every part of a multipart upload but the last is at least this).
MIN_PART_SIZE = 5 * MiB
DEFAULT_PREFIX = "norc_logs/"
DEFAULT_TRIES = 3
DEFAULT_BACKOFF = 1.0
DEFAULT_MULTIPART_THRESHOLD = 8 * MiB
#: The longest pause between two tries, whatever ``backoff`` and ``tries`` say.
MAX_PAUSE = 30.0

SETTINGS = (
    "bucket",
    "prefix",
    "region",
    "endpoint_url",
    "tries",
    "backoff",
    "multipart_threshold",
    "addressing_style",
)
_CREDENTIAL_WORDS = ("secret", "access_key", "accesskey", "token", "password", "credential")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_URL = re.compile(r"https?://\S+")
_MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    }
)


class S3LogError(NorcError):
    """Reading or writing a log in S3 failed; the message names the bucket and key."""


class InvalidLogKey(NorcError, ValueError):
    """A log key that could address something outside the store's prefix."""


def check_key(key: object) -> str:
    """Return ``key`` if it is a safe relative log key, else raise :class:`InvalidLogKey`.

    Norc builds keys from sanitised names, so this is defence in depth: a key must be
    a non-empty relative path without ``..`` segments, backslashes or control characters.
    """
    if not isinstance(key, str) or not key:
        raise InvalidLogKey(f"invalid log key {key!r}: must be a non-empty string")
    if key.startswith("/"):
        raise InvalidLogKey(f"invalid log key {key!r}: must be relative, not start with '/'")
    if "\\" in key:
        raise InvalidLogKey(f"invalid log key {key!r}: backslashes are not allowed")
    if ".." in key.split("/"):
        raise InvalidLogKey(f"invalid log key {key!r}: '..' segments are not allowed")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidLogKey(f"invalid log key {key!r}: control characters are not allowed")
    return key


class S3LogStore(LogStore):
    """Keeps finished logs as objects in one S3 bucket. Settings: :meth:`validate_settings`."""

    store_name = "s3"

    def __init__(self, *, settings: Mapping[str, Any], log_dir: Path) -> None:
        super().__init__(settings=settings, log_dir=log_dir)
        config = self.validate_settings(settings)
        self.bucket: str = config["bucket"]
        self.prefix: str = config.get("prefix", DEFAULT_PREFIX)
        self.tries: int = config.get("tries", DEFAULT_TRIES)
        self.backoff: float = config.get("backoff", DEFAULT_BACKOFF)
        self._region: str | None = config.get("region")
        self._endpoint_url: str | None = config.get("endpoint_url")
        self._addressing_style: str | None = config.get("addressing_style")
        threshold: int = config.get("multipart_threshold", DEFAULT_MULTIPART_THRESHOLD)
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
        - ``tries``: attempts per upload or read on transient errors (default 3).
        - ``backoff``: seconds before the second try, doubling after (default 1.0).
        - ``multipart_threshold``: bytes from which a log goes up in parts of this size
          (default 8 MiB, at least 5 MiB, S3's smallest part).

        Keys that look like credentials are refused: they only come from boto3's chain.
        """
        for key in settings:
            if any(word in str(key).lower() for word in _CREDENTIAL_WORDS):
                raise ConfigurationError(
                    f"S3 log store setting {key!r} looks like a credential: Norc never keeps"
                    " credentials in its settings; give them to boto3 through its standard"
                    " chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and"
                    " ~/.aws/credentials, or an instance, task or pod role)"
                )
        unknown = sorted(str(k) for k in set(settings) - set(SETTINGS))
        if unknown:
            raise ConfigurationError(
                f"unknown S3 log store setting(s) {', '.join(map(repr, unknown))}"
                f" (known: {', '.join(SETTINGS)})"
            )
        out: dict[str, Any] = {}
        bucket = settings.get("bucket")
        if bucket is None:
            raise ConfigurationError("the S3 log store needs the setting 'bucket'")
        if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket):
            raise ConfigurationError(
                f"S3 setting 'bucket' must be a bucket name (3-63 lowercase letters, digits,"
                f" '.' or '-'), got {bucket!r}"
            )
        out["bucket"] = bucket
        prefix = settings.get("prefix")
        if prefix is not None:
            if not isinstance(prefix, str):
                raise ConfigurationError(f"S3 setting 'prefix' must be a string, got {prefix!r}")
            if prefix:
                try:
                    check_key(prefix)
                except InvalidLogKey as exc:
                    raise ConfigurationError(f"S3 setting 'prefix': {exc}") from None
            out["prefix"] = prefix
        for key in ("region", "endpoint_url"):
            value = settings.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(
                    f"S3 setting {key!r} must be a non-empty string, got {value!r}"
                )
            if key == "endpoint_url" and not _URL.fullmatch(value):
                raise ConfigurationError(
                    f"S3 setting 'endpoint_url' must be an http(s) URL, got {value!r}"
                )
            out[key] = value
        style = settings.get("addressing_style")
        if style is not None:
            if style not in ("auto", "path", "virtual"):
                raise ConfigurationError(
                    "S3 setting 'addressing_style' must be 'auto', 'path' or 'virtual',"
                    f" got {style!r}"
                )
            out["addressing_style"] = style
        tries = settings.get("tries")
        if tries is not None:
            if type(tries) is not int or not 1 <= tries <= 20:
                raise ConfigurationError(
                    f"S3 setting 'tries' must be a whole number from 1 to 20, got {tries!r}"
                )
            out["tries"] = tries
        backoff = settings.get("backoff")
        if backoff is not None:
            if (
                isinstance(backoff, bool)
                or not isinstance(backoff, (int, float))
                or not 0 <= backoff <= MAX_PAUSE
            ):
                raise ConfigurationError(
                    f"S3 setting 'backoff' must be seconds from 0 to {MAX_PAUSE:g}, got {backoff!r}"
                )
            out["backoff"] = float(backoff)
        threshold = settings.get("multipart_threshold")
        if threshold is not None:
            if type(threshold) is not int or threshold < MIN_PART_SIZE:
                raise ConfigurationError(
                    "S3 setting 'multipart_threshold' must be a whole number of bytes"
                    f" >= {MIN_PART_SIZE}"
                    f" (5 MiB, S3's smallest part), got {threshold!r}"
                )
            out["multipart_threshold"] = threshold
        return out

    # -- the LogStore contract -------------------------------------------------------

    def object_key(self, key: str) -> str:
        """The S3 object key of log key ``key`` (checked by :func:`check_key`)."""
        return self.prefix + check_key(key)

    def save(self, key: str, local_path: Path) -> str:
        """Upload the log; return ``s3://bucket/object-key``.

        Transient failures (network, throttling, 5xx) are retried up to ``tries`` times
        with a doubling pause; the last failure, or any other, raises :class:`S3LogError`.
        Logs from ``multipart_threshold`` bytes on go up in parts.
        """
        object_key = self.object_key(key)
        client = self._s3()

        def upload() -> None:
            client.upload_file(
                str(local_path),
                self.bucket,
                object_key,
                Config=self.transfer,
                ExtraArgs={"ContentType": "text/plain; charset=utf-8"},
            )

        self._retrying(f"upload {local_path} to", object_key, upload)
        return f"s3://{self.bucket}/{object_key}"

    def open(self, key: str) -> bytes | None:
        """The stored log's bytes; None if there is no such object.

        A missing bucket, refused access and the like raise :class:`S3LogError` naming
        bucket and key: they are misconfiguration, not a missing log.
        """
        object_key = self.object_key(key)
        client = self._s3()

        def read() -> bytes | None:
            try:
                answer = client.get_object(Bucket=self.bucket, Key=object_key)
            except ClientError as exc:
                if _code(exc) in _MISSING_OBJECT_CODES:
                    return None
                raise
            data: bytes = answer["Body"].read()
            return data

        return self._retrying("read", object_key, read)

    # -- internals -------------------------------------------------------------------

    def _retrying(self, action: str, object_key: str, call: Callable[[], T]) -> T:
        """Run ``call``; on a transient failure, pause and try again, ``tries`` times in all."""
        where = f"s3://{self.bucket}/{object_key}"
        for attempt in range(1, self.tries + 1):
            try:
                return call()
            except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
                reason = _describe(exc)
                if not _is_transient(exc):
                    raise S3LogError(f"cannot {action} {where}: {reason}") from exc
                if attempt == self.tries:
                    raise S3LogError(
                        f"cannot {action} {where} after {self.tries} tries: {reason}"
                    ) from exc
                pause = min(self.backoff * 2 ** (attempt - 1), MAX_PAUSE)
                log.warning(
                    "S3 call failed; retrying",
                    action=action,
                    location=where,
                    attempt=attempt,
                    tries=self.tries,
                    pause=pause,
                    error=reason,
                )
                time.sleep(pause)
        raise AssertionError("unreachable: tries >= 1")  # pragma: no cover

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                s3_options = (
                    {"addressing_style": self._addressing_style} if self._addressing_style else None
                )
                try:
                    # A session of our own: boto3's default session is not thread-safe
                    # and uploads run in Norc's background threads.
                    self._client = boto3.session.Session().client(
                        "s3",
                        region_name=self._region,
                        endpoint_url=self._endpoint_url,
                        config=Config(
                            # ``tries`` is the only retry knob: botocore retrying inside
                            # each of our tries would multiply the attempts.
                            retries={"mode": "standard", "total_max_attempts": 1},
                            connect_timeout=10,
                            read_timeout=60,
                            s3=s3_options,
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


def _is_transient(exc: BaseException) -> bool:
    """Whether trying again may succeed: network trouble, throttling, 5xx answers."""
    client_error = _client_error(exc)
    if client_error is not None:
        meta = client_error.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode", 0) or 0)
        return status >= 500 or _code(client_error) in _TRANSIENT_CODES
    return any(isinstance(c, (BotoConnectionError, HTTPClientError)) for c in _chain(exc))


@hookimpl
def norc_register_types(registry: PluginRegistry) -> None:
    """Provide the ``s3`` log store."""
    registry.add_log_store(S3LogStore)
