"""norc-sqs: :class:`SQSQueue`, a Norc queue on Amazon SQS (or any SQS-compatible service).

Installed, it registers the queue type ``sqs``::

    app.create_queue("reports", type="sqs", queue_name="norc-reports", region="eu-west-1")

How the queue keeps Norc's guarantees on a service that delivers *at least once*:

- :meth:`SQSQueue.push` sends one JSON message per instance, and only after the
  enqueuing transaction committed (``tx.after_commit``), so no message ever announces
  an instance that was rolled back.
- :meth:`SQSQueue.claim` receives messages, then moves their instances QUEUED → RUNNING
  with :meth:`norc.store.seam.QueueStore.mark_running`, whose conditional update only
  one claimant can win. A message delivered twice, or for an instance that already ran,
  loses that race and is simply deleted: running stays exactly-once.
- Messages are deleted as soon as the claim is committed, so :meth:`SQSQueue.release`
  has nothing left to do. A message whose claim transaction failed (the database away)
  stays in SQS and is offered again after :data:`DEFER_SECONDS`, or, if SQS refuses
  that too, after the visibility timeout.
- Bodies that are not Norc's (not JSON, another format version, no usable instance id)
  are logged and deleted, never raised: left in the queue they would come back after
  every visibility timeout, forever unless the SQS queue has a redrive policy.

Credentials never appear in queue settings (which every user of the database can
read): boto3 finds them through its standard chain.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from norc.abc import Claimant, Queue, QueueItem
from norc.aws import AWSSettings
from norc.errors import ConfigurationError, NorcError
from norc.plugin_settings import boolean, http_url, optional, refuse, text, whole_number
from norc.pluginmarkers import hookimpl
from norc.registry import PluginRegistry
from norc.store.seam import Transaction

__all__ = ["BODY_VERSION", "SQSError", "SQSQueue", "SQSSettings", "norc_register_types"]

log = structlog.get_logger("norc.sqs")

#: The message body format this plugin writes and reads; other versions are foreign.
BODY_VERSION = 1
#: SQS's cap on one batch send, batch delete and one receive.
BATCH = 10
#: SQS's cap on a message's delivery delay, in seconds.
MAX_DELAY = 900
#: How long a message whose task is at its concurrency limit stays hidden before
#: it is offered again.
DEFER_SECONDS = 1
#: SQS's cap on a long poll, in seconds.
MAX_WAIT_TIME = 20
#: SQS's cap on a visibility timeout (12 hours), in seconds.
MAX_VISIBILITY_TIMEOUT = 43_200
#: Long-poll seconds when the ``wait_time`` setting is not given: the longest, cheapest.
DEFAULT_WAIT_TIME = 20
#: The FIFO message group when ``message_group`` is not given.
DEFAULT_MESSAGE_GROUP = "norc"
#: Seconds between short polls, when less than a whole second of a claim is left and
#: SQS cannot long-poll for it: bounds the requests an idle executor makes.
SHORT_POLL_PAUSE = 0.25
#: Largest instance id a message may name (the id column is a signed 64-bit integer).
MAX_INSTANCE_ID = 2**63 - 1

_MAX_QUEUE_NAME = 80
#: A queue name: letters, digits, '-' and '_', ending in '.fifo' for a FIFO queue.
_QUEUE_NAME = rf"(?=.{{1,{_MAX_QUEUE_NAME}}}\Z)[A-Za-z0-9_-]+(\.fifo)?"
_REGION_IN_URL = re.compile(r"^https?://sqs[.-]([a-z0-9-]+)\.amazonaws\.com")
_MISSING_QUEUE_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
    }
)


class SQSError(NorcError):
    """An SQS call failed or SQS cannot do what was asked; the message names the queue.

    ``transient`` is True for failures that may pass by themselves (network errors,
    throttling, 5xx answers); ``code`` is the AWS error code, when there was one.
    """

    def __init__(self, message: str, *, transient: bool = False, code: str = "") -> None:
        super().__init__(message)
        self.transient = transient
        self.code = code


def _named_fifo(settings: SQSSettings) -> bool:
    return (settings.queue_url or settings.queue_name or "").endswith(".fifo")


def _queue_url(instance: SQSSettings, attribute: attrs.Attribute[Any], value: object) -> None:
    if (value is None) == (instance.queue_name is None):
        raise ConfigurationError(
            "SQS queue settings need exactly one of 'queue_url' or 'queue_name'"
            + (", not both" if value is not None else "")
        )
    if value is not None:
        http_url(instance, attribute, value)


def _fifo(instance: SQSSettings, attribute: attrs.Attribute[Any], value: object) -> None:
    boolean(instance, attribute, value)
    if value != _named_fifo(instance):
        raise ConfigurationError(
            "SQS queue setting 'fifo' is true but the queue name does not end in '.fifo'"
            if value
            else "SQS queue setting 'fifo' is false but the queue name ends in '.fifo'"
            " (a FIFO queue)"
        )


def _message_group(instance: SQSSettings, attribute: attrs.Attribute[Any], value: object) -> None:
    if not instance.fifo:
        raise ConfigurationError("SQS queue setting 'message_group' only applies to FIFO queues")
    if not isinstance(value, str) or not 1 <= len(value) <= 128 or not value.isprintable():
        refuse(instance, attribute.name, "1-128 printable characters", value)


def _create(instance: SQSSettings, attribute: attrs.Attribute[Any], value: object) -> None:
    boolean(instance, attribute, value)
    if value and instance.queue_name is None:
        raise ConfigurationError(
            "SQS queue setting 'create' needs 'queue_name' (a queue URL cannot be created)"
        )


@attrs.frozen(kw_only=True)
class SQSSettings(AWSSettings):
    """An SQS queue's settings (see :meth:`SQSQueue.validate_settings`)."""

    kind = "SQS queue"

    queue_url: str | None = attrs.field(default=None, validator=_queue_url)
    queue_name: str | None = attrs.field(
        default=None,
        validator=optional(
            text(
                _QUEUE_NAME,
                f"1-{_MAX_QUEUE_NAME} letters, digits, '-' or '_' (FIFO queues end in '.fifo')",
            )
        ),
    )
    visibility_timeout: int | None = attrs.field(
        default=None,
        validator=optional(
            whole_number(
                0,
                MAX_VISIBILITY_TIMEOUT,
                f"a whole number of seconds from 0 to {MAX_VISIBILITY_TIMEOUT}",
            )
        ),
    )
    wait_time: int | None = attrs.field(
        default=None,
        validator=optional(
            whole_number(0, MAX_WAIT_TIME, f"a whole number of seconds from 0 to {MAX_WAIT_TIME}")
        ),
    )
    #: Always set once parsed: from the queue's name when not given.
    fifo: bool = attrs.field(default=attrs.Factory(_named_fifo, takes_self=True), validator=_fifo)
    message_group: str | None = attrs.field(default=None, validator=optional(_message_group))
    create: bool | None = attrs.field(default=None, validator=optional(_create))


class SQSQueue(Queue):
    """A Norc queue whose items are messages in one SQS queue.

    Standard SQS queues deliver in roughly FIFO order and sometimes twice; FIFO queues
    (``fifo=true``) deliver in order within a message group and drop a message whose
    deduplication id (the instance id) was seen in the last five minutes. Priorities
    are not supported by SQS and are ignored. Settings: see :meth:`validate_settings`.
    """

    type_name = "sqs"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Settings come back from the database: check them again, so a hand-edited row
        # fails here with the key named rather than deep inside boto3.
        config = SQSSettings.parse(self.settings)
        self.config = config
        self._queue_url: str | None = config.queue_url
        self._queue_name: str | None = config.queue_name
        self._region: str | None = config.region or _region_from_url(self._queue_url)
        self._endpoint_url: str | None = config.endpoint_url
        self._visibility_timeout: int | None = config.visibility_timeout
        self._wait_time: int = DEFAULT_WAIT_TIME if config.wait_time is None else config.wait_time
        self._fifo: bool = config.fifo
        self._message_group: str = config.message_group or DEFAULT_MESSAGE_GROUP
        self._create: bool = bool(config.create)
        self._lock = threading.Lock()
        self._client: Any = None
        self._resolved_url: str | None = None
        self._interrupted = False

    # -- settings --------------------------------------------------------------------

    @classmethod
    def validate_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Check SQS queue settings; returns them normalised (``fifo`` always present).

        - ``queue_url`` or ``queue_name`` (exactly one): the SQS queue.
        - ``region``: AWS region; default: from ``queue_url``, else boto3's chain.
        - ``endpoint_url``: another SQS endpoint (a VPC endpoint, a local test server).
        - ``visibility_timeout``: seconds a received message stays hidden (0-43200);
          default: the SQS queue's own.
        - ``wait_time``: long-poll seconds of one receive (0-20, default 20).
        - ``fifo``: a FIFO queue (its name ends in ``.fifo``); default: from the name.
        - ``message_group``: the FIFO message group (default ``norc``); FIFO only.
        - ``create``: create the SQS queue on first use if it is missing (default False;
          needs ``queue_name``).

        Raises :class:`norc.errors.ConfigurationError` naming the bad key; keys that look
        like credentials are refused, as credentials only come from boto3's chain.
        """
        return SQSSettings.parse(settings).given()

    # -- the Queue contract ----------------------------------------------------------

    def push(self, items: Sequence[QueueItem], tx: Transaction) -> None:
        """Send one message per item once ``tx`` has committed (batches of 10).

        Sending after the commit means a message never names a rolled-back instance.
        If SQS refuses some messages even after a retry, :class:`SQSError` is raised
        (after the commit) naming the instances that are QUEUED without a message.
        """
        if not items:
            return
        entries = [self._entry(item) for item in items]
        tx.after_commit(lambda: self._send(entries))

    def claim(self, claimant: Claimant, limit: int, timeout: float) -> list[int]:
        """Receive messages and claim their instances; see the module docstring.

        Long-polls for ``min(wait_time, timeout)`` whole seconds per receive; when less
        than a second is left, short-polls every 0.25 s. :meth:`wake` takes effect
        between receives, so at worst after one long poll. Transient SQS failures are
        logged and retried until the timeout (then the claim returns empty); others
        raise :class:`SQSError`.
        """
        if limit < 1:
            return []
        deadline = time.monotonic() + max(timeout, 0.0)
        try:
            while True:
                generation = self.db.wakeups.generation(self.name)
                if self._interrupted:
                    return []
                remaining = deadline - time.monotonic()
                wait = max(0, min(self._wait_time, int(remaining)))
                failed = False
                try:
                    messages = self._receive(min(limit, BATCH), wait)
                except SQSError as exc:
                    if not exc.transient:
                        raise
                    log.warning("SQS receive failed; will retry", queue=self.name, error=str(exc))
                    messages, failed = [], True
                if messages:
                    won = self._settle(messages, claimant)
                    if won:
                        return won
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if (wait == 0 and not messages) or failed:
                    # An empty short poll (or a failure) returns at once: pause rather
                    # than hammer SQS; an enqueue or wake() in this process ends the pause.
                    pause = 1.0 if failed else SHORT_POLL_PAUSE
                    self.db.wakeups.wait(self.name, generation, min(remaining, pause))
        finally:
            self._interrupted = False

    def release(self, instance_ids: Sequence[int], tx: Transaction) -> None:
        """Nothing to do: :meth:`claim` deleted the messages once it had claimed them."""

    def count(self) -> int:
        """SQS's ApproximateNumberOfMessages: visible messages, an estimate.

        SQS counts are eventually consistent; they also include duplicates and messages
        for instances that already ran, which a claim will drop.
        """
        answer = self._call(
            "get_queue_attributes",
            QueueUrl=self._url(),
            AttributeNames=["ApproximateNumberOfMessages"],
        )
        return int(answer.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))

    def peek(self, limit: int = 10) -> list[int]:
        """Always raises :class:`SQSError`: SQS cannot show messages without taking them.

        Receiving a message hides it from every executor for the visibility timeout,
        so a "peek" would delay the very work it looks at; returning [] would claim
        the queue is empty. :meth:`count` gives the approximate depth.
        """
        raise SQSError(
            f"queue {self.name!r} is an SQS queue: SQS cannot show waiting messages without"
            " taking them from executors; use count() for its approximate depth"
        )

    def wake(self) -> None:
        """Make a waiting :meth:`claim` return: at once if it pauses, else after its long poll."""
        self._interrupted = True
        self.db.wakeups.notify(self.name)

    def close(self) -> None:
        """Close the boto3 client (its connection pool); a later call opens a new one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- sending ---------------------------------------------------------------------

    def _entry(self, item: QueueItem) -> dict[str, Any]:
        body = json.dumps(
            {"v": BODY_VERSION, "instance_id": item.instance_id, "task_type": item.task_type},
            separators=(",", ":"),
        )
        entry: dict[str, Any] = {"Id": str(item.instance_id), "MessageBody": body}
        if self._fifo:
            entry["MessageGroupId"] = self._message_group
            # SQS drops a repeat of this id within 5 minutes: a retried push of the same
            # instance cannot put it in the queue twice.
            entry["MessageDeduplicationId"] = str(item.instance_id)
        elif item.available_at is not None:
            # A retry's backoff. SQS delays at most 15 minutes (and not per message on
            # FIFO queues): longer backoffs start early there, never late.
            delay = (item.available_at - datetime.now(UTC)).total_seconds()
            entry["DelaySeconds"] = max(0, min(MAX_DELAY, math.ceil(delay)))
        return entry

    def _send(self, entries: list[dict[str, Any]]) -> None:
        unsent: list[str] = []
        reason = ""
        try:
            url = self._url()
        except SQSError as exc:
            unsent, reason = [e["Id"] for e in entries], str(exc)
        else:
            for chunk in _chunks(entries, BATCH):
                # One retry of the entries SQS refused: batch calls fail per entry.
                for _attempt in range(2):
                    try:
                        answer = self._call("send_message_batch", QueueUrl=url, Entries=chunk)
                    except SQSError as exc:
                        reason = str(exc)
                        continue
                    failed = {f["Id"]: f for f in answer.get("Failed", [])}
                    chunk = [e for e in chunk if e["Id"] in failed]
                    if chunk:
                        first = next(iter(failed.values()))
                        reason = f"{first.get('Code')}: {first.get('Message')}"
                    else:
                        break
                unsent += [e["Id"] for e in chunk]
        # Executors of this queue in this process may be pausing between short polls.
        self.db.wakeups.notify(self.name)
        if unsent:
            log.error("SQS send failed", queue=self.name, instances=unsent, error=reason)
            raise SQSError(
                f"instance(s) {', '.join(unsent)} are QUEUED but their messages could not be"
                f" sent to SQS for queue {self.name!r} ({reason}); they will not run until"
                " pushed again"
            )

    # -- receiving -------------------------------------------------------------------

    def _receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        request: dict[str, Any] = {
            "QueueUrl": self._url(),
            "MaxNumberOfMessages": count,
            "WaitTimeSeconds": wait,
        }
        if self._visibility_timeout is not None:
            request["VisibilityTimeout"] = self._visibility_timeout
        messages: list[dict[str, Any]] = self._call("receive_message", **request).get(
            "Messages", []
        )
        return messages

    def _settle(self, messages: list[dict[str, Any]], claimant: Claimant) -> list[int]:
        """Claim the instances the messages name; delete every message that is dealt with."""
        handles: dict[int, list[str]] = {}
        garbage: list[str] = []
        for message in messages:
            body = message.get("Body")
            instance_id, problem = parse_body(body)
            if instance_id is None:
                log.warning(
                    "dropping a message that is not Norc's",
                    queue=self.name,
                    message_id=message.get("MessageId"),
                    reason=problem,
                    body=_excerpt(body),
                )
                garbage.append(message["ReceiptHandle"])
            else:
                handles.setdefault(instance_id, []).append(message["ReceiptHandle"])
        # Garbage first: it needs no second look, whatever happens to the claim below.
        self._delete(garbage)
        if not handles:
            return []
        ids = sorted(handles)
        try:
            with self.db.transaction() as tx:
                won = self.db.mark_running(tx, ids, claimant)
                # Still QUEUED but not won: held back by the task's concurrency limit.
                deferred = self.db.still_queued(tx, set(ids) - set(won))
        except Exception:
            # Nothing was claimed (the database is away, say). Offer the messages again
            # in DEFER_SECONDS rather than after the visibility timeout, which may be
            # minutes: the claim after the database is back finds them. The executor's
            # claim loop paces its retries meanwhile.
            self._defer([h for i in ids for h in handles[i]])
            raise
        # The won instances are now RUNNING for this claimant: nothing below may raise,
        # or they would be stuck RUNNING with nobody running them.
        lost = sorted(set(ids) - set(won) - deferred)
        if lost:
            self._explain_lost(lost)
        self._delete([h for i in ids if i not in deferred for h in handles[i]])
        self._defer([h for i in sorted(deferred) for h in handles[i]])
        return won

    def _defer(self, receipt_handles: list[str]) -> None:
        """Offer messages again after :data:`DEFER_SECONDS` (their task is at its limit, or
        their claim failed); never raises."""
        if not receipt_handles:
            return
        try:
            url = self._url()
            for start in range(0, len(receipt_handles), BATCH):
                chunk = receipt_handles[start : start + BATCH]
                self._call(
                    "change_message_visibility_batch",
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(k), "ReceiptHandle": h, "VisibilityTimeout": DEFER_SECONDS}
                        for k, h in enumerate(chunk)
                    ],
                )
        except Exception as exc:  # noqa: BLE001 - the visibility timeout brings them back anyway
            log.warning(
                "could not defer SQS messages; they return after the visibility timeout",
                queue=self.name,
                error=str(exc),
            )

    def _explain_lost(self, lost: list[int]) -> None:
        """Log why messages were dropped: their instance is missing, or not QUEUED."""
        try:
            statuses = {r.id: r.status.value for r in self.db.instances_by_id(lost)}
        except Exception as exc:  # noqa: BLE001 - only a log line depends on it
            log.info(
                "dropping SQS messages of instances not claimable",
                queue=self.name,
                instances=lost,
                error=str(exc),
            )
            return
        for instance_id in lost:
            if instance_id in statuses:
                # SQS delivers at least once, and a crash between commit and delete
                # redelivers: routine, the conditional update did its job.
                log.info(
                    "dropping a duplicate SQS message",
                    queue=self.name,
                    instance=instance_id,
                    status=statuses[instance_id],
                )
            else:
                log.warning(
                    "dropping an SQS message for a missing instance",
                    queue=self.name,
                    instance=instance_id,
                )

    def _delete(self, receipt_handles: list[str]) -> None:
        """Delete messages; failures are logged (a kept message is dropped on redelivery)."""
        for chunk in _chunks(receipt_handles, BATCH):
            entries = [{"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(chunk)]
            try:
                answer = self._call("delete_message_batch", QueueUrl=self._url(), Entries=entries)
            except SQSError as exc:
                log.warning(
                    "SQS delete failed; the messages will be redelivered and dropped",
                    queue=self.name,
                    error=str(exc),
                )
                continue
            if answer.get("Failed"):
                log.warning(
                    "SQS delete failed; the messages will be redelivered and dropped",
                    queue=self.name,
                    failed=answer["Failed"],
                )

    # -- the boto3 client ------------------------------------------------------------

    def _sqs(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    # A session per queue object: boto3's default session is not
                    # thread-safe, clients are.
                    self._client = boto3.session.Session().client(
                        "sqs",
                        region_name=self._region,
                        endpoint_url=self._endpoint_url,
                        config=Config(
                            retries={"mode": "standard"},
                            connect_timeout=10,
                            # A long poll holds the connection for up to 20 s.
                            read_timeout=MAX_WAIT_TIME + 20,
                        ),
                    )
                except BotoCoreError as exc:
                    raise ConfigurationError(
                        f"cannot use SQS for queue {self.name!r}: {exc} (set the 'region'"
                        " setting, or AWS_DEFAULT_REGION / a profile region)"
                    ) from None
            return self._client

    def _call(self, method: str, **request: Any) -> Any:
        """Call an SQS API, turning boto3's errors into :class:`SQSError`."""
        client = self._sqs()
        try:
            return getattr(client, method)(**request)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise SQSError(
                f"SQS {method} failed for queue {self.name!r}: {_describe(exc)}",
                transient=_is_transient(exc),
                code=code,
            ) from exc
        except BotoCoreError as exc:
            raise SQSError(
                f"SQS {method} failed for queue {self.name!r}: {exc}",
                transient=_is_transient(exc),
            ) from exc

    def _url(self) -> str:
        """The SQS queue URL: given, looked up by name, or (``create``) a new queue's."""
        url = self._resolved_url
        if url is None:
            # Two threads may both look it up the first time: harmless (create_queue
            # with the same attributes is idempotent), and cheaper than a lock held
            # across a network call.
            url = self._queue_url or self._lookup()
            self._resolved_url = url
        return url

    def _lookup(self) -> str:
        name = self._queue_name
        assert name is not None  # validate_settings requires a name or a URL
        try:
            return str(self._call("get_queue_url", QueueName=name)["QueueUrl"])
        except SQSError as exc:
            if exc.code not in _MISSING_QUEUE_CODES:
                raise
        if not self._create:
            raise SQSError(
                f"SQS queue {name!r} (for Norc queue {self.name!r}) does not exist in region"
                f" {self._region or 'from the AWS configuration'}: create it, or set"
                " create=true in the queue's settings",
                code="QueueDoesNotExist",
            )
        attributes = {"FifoQueue": "true"} if self._fifo else {}
        if self._visibility_timeout is not None:
            attributes["VisibilityTimeout"] = str(self._visibility_timeout)
        url = str(self._call("create_queue", QueueName=name, Attributes=attributes)["QueueUrl"])
        log.info("created SQS queue", queue=self.name, sqs_queue=name, url=url)
        return url


def parse_body(body: object) -> tuple[int | None, str]:
    """The instance id a message body names, or (None, why it is not a Norc message)."""
    if not isinstance(body, str):
        return None, "no body"
    try:
        data = json.loads(body)
    except ValueError:
        return None, "not JSON"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    version = data.get("v")
    if type(version) is not int or version != BODY_VERSION:
        return None, f"unknown format version {version!r}"
    instance_id = data.get("instance_id")
    if type(instance_id) is not int or not 0 < instance_id <= MAX_INSTANCE_ID:
        return None, f"instance_id {instance_id!r} is not a positive integer"
    return instance_id, ""


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _excerpt(body: object, limit: int = 200) -> str:
    text = body if isinstance(body, str) else repr(body)
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'error')}: {error.get('Message', exc)}"


def _is_transient(exc: Exception) -> bool:
    """Whether retrying later may succeed: network trouble, throttling, 5xx answers."""
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return status >= 500 or code in _TRANSIENT_CODES
    return isinstance(exc, (BotoConnectionError, HTTPClientError))


def _region_from_url(url: str | None) -> str | None:
    match = _REGION_IN_URL.match(url or "")
    return match.group(1) if match else None


@hookimpl
def norc_register_types(registry: PluginRegistry) -> None:
    """Provide the ``sqs`` queue type."""
    registry.add_queue_type(SQSQueue)
