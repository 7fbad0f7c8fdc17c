"""The behaviour plugins provide: :class:`Task`, :class:`Queue` and :class:`LogStore`.

Each is an abstract base class whose docstrings state the contract. A subclass that
misses a method fails when it is instantiated (``TypeError``), not in the middle of a
run. Plugins hand their subclasses to Norc through the ``norc_register_types`` hook
(see :mod:`norc.hookspecs`); application code can register a Task subclass directly
(:meth:`norc.Norc.register_task_type`) or simply save an instance of it.
"""

from __future__ import annotations

import abc
import functools
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

import attrs

from norc.errors import InvalidName, InvalidTaskParams

# Defined with the records (a layer below, which the store uses too); named here as well,
# since plugins import them from the extension points.
from norc.records import DEFAULT_RETRY_ON as DEFAULT_RETRY_ON
from norc.records import TASK_SETTINGS as TASK_SETTINGS
from norc.records import Claimant as Claimant

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from norc.store.seam import QueueStore, Transaction

MAX_NAME_LENGTH = 200
# Checked on every task construction, i.e. once per instance run: a regex, not a loop.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def check_name(kind: str, name: object) -> str:
    """Return ``name`` if it is usable as a task or queue name, else raise :class:`InvalidName`.

    Names are free text (they are shown, not parsed) but must be non-empty, at most
    200 characters and free of control characters, which would garble reports and logs.
    Log paths never use a name as-is: see :func:`norc.logs.safe_component`.
    """
    if not isinstance(name, str):
        raise InvalidName(kind, name, "must be a string")
    if not name.strip():
        raise InvalidName(kind, name, "must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(kind, name[:40] + "...", f"longer than {MAX_NAME_LENGTH} characters")
    if _CONTROL_CHARS.search(name):
        raise InvalidName(kind, name, "contains control characters")
    return name


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < 0:
        raise InvalidTaskParams(
            type(instance).__name__, f"{attribute.name} must be >= 0, got {value!r}"
        )


RETRYABLE = frozenset({"FAILURE", "TIMEDOUT", "INTERRUPTED", "ERROR"})
OVERLAP_POLICIES = ("allow", "skip", "queue", "replace")
#: The overlap policies under which a new run is created without looking at the task's
#: other runs (``queue`` holds it back at claim time instead).
INDEPENDENT_OVERLAP = ("allow", "queue")


def _fraction(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 <= value <= 1:
        raise InvalidTaskParams(
            type(instance).__name__, f"{attribute.name} must be 0-1, got {value!r}"
        )


def _retry_statuses(
    instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]
) -> None:
    wrong = sorted(set(value) - RETRYABLE)
    if wrong:
        raise InvalidTaskParams(
            type(instance).__name__,
            f"retry_on: {', '.join(wrong)} cannot be retried"
            f" (choose from {', '.join(sorted(RETRYABLE))})",
        )


def _overlap(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in OVERLAP_POLICIES:
        raise InvalidTaskParams(
            type(instance).__name__,
            f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, got {value!r}",
        )


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 1:
        raise InvalidTaskParams(
            type(instance).__name__, f"{attribute.name} must be >= 1, got {value!r}"
        )


@attrs.define(kw_only=True)
class RunContext:
    """What a running task gets from Norc: who it is, where to write, how long it has."""

    instance_id: int
    attempt: int
    task_name: str
    #: The schedule's intended fire time, when the instance came from a schedule.
    fire_time: datetime | None
    #: Seconds since the epoch by which ``run`` must have returned, or None.
    deadline: float | None
    #: Norc's structured logger for this instance; its events go to the instance log.
    log: FilteringBoundLogger
    #: The instance's log file, opened for binary append; pass it to subprocesses.
    log_file: IO[bytes]
    #: A task that runs a process sets this, and Norc records it on the instance.
    exit_code: int | None = None
    #: A task may set a one-line reason for its failure; Norc records it on the instance.
    error: str | None = None


@attrs.define(kw_only=True)
class Task(abc.ABC):
    """A unit of work, saved once under a unique name and run as many instances.

    Subclass it, decorate the subclass with ``@attrs.define(kw_only=True)`` and declare
    its parameters as typed fields; they persist as JSON, so use JSON types (str, int,
    float, bool, None, lists and string-keyed dicts of them). Implement :meth:`run`.

    Outcome: ``run`` returning ``True`` or ``None`` is SUCCESS, ``False`` is FAILURE,
    raising is FAILURE (with the traceback in the log), exceeding ``timeout`` is
    TIMEDOUT. :meth:`finally_` runs after ``run`` in every case, bounded by
    ``finally_timeout``.
    """

    #: The name this type is registered and stored under; defaults to the class name.
    type_name: ClassVar[str] = ""
    #: True for tasks an executor expands into other instances instead of running them
    #: (Jobs): they never occupy a worker or a slot.
    expands: ClassVar[bool] = False

    name: str = attrs.field(validator=lambda _i, _a, v: check_name("task", v))
    description: str = ""
    #: Seconds ``run`` may take before the instance is stopped and ends TIMEDOUT.
    timeout: float | None = attrs.field(default=None, validator=_non_negative)
    #: Seconds ``finally_`` may take; it is stopped after that, whatever it was doing.
    finally_timeout: float = attrs.field(default=10.0, validator=_non_negative)
    #: Attempts after the first when an attempt ends in a status of ``retry_on``.
    max_retries: int = attrs.field(default=0, validator=_non_negative)
    #: Seconds before the first retry; each next one waits ``retry_backoff`` times longer,
    #: at most ``retry_max_delay``, spread by +/- ``retry_jitter`` (a fraction).
    retry_delay: float = attrs.field(default=1.0, validator=_non_negative)
    retry_backoff: float = attrs.field(default=2.0, validator=_non_negative)
    retry_max_delay: float = attrs.field(default=3600.0, validator=_non_negative)
    retry_jitter: float = attrs.field(default=0.1, validator=_fraction)
    #: Which outcomes are retried. ERROR (Norc could not run the task: a missing type,
    #: bad params) is left out by default: trying again rarely helps.
    retry_on: tuple[str, ...] = attrs.field(
        default=DEFAULT_RETRY_ON, converter=tuple, validator=_retry_statuses
    )
    #: A new run while an earlier one is active: ``allow`` it, ``skip`` it (recorded
    #: SKIPPED), ``queue`` it (it starts when the earlier one ends) or ``replace`` the
    #: earlier one (interrupted).
    overlap: str = attrs.field(default="allow", validator=_overlap)
    #: At most this many instances of the task RUNNING anywhere at once.
    concurrency_limit: int | None = attrs.field(default=None, validator=_positive_or_none)
    #: The database id, set once the task is saved.
    id: int | None = attrs.field(default=None, eq=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("type_name"):
            cls.type_name = cls.__name__

    @abc.abstractmethod
    def run(self, ctx: RunContext) -> bool | None:
        """Do the work. Return True/None for success, False for failure; raising is failure."""

    def finally_(self, ctx: RunContext) -> None:  # noqa: B027 - optional hook, empty on purpose
        """Clean up after :meth:`run`: called after success, failure, timeout and interruption."""

    def on_save(self, app: Any) -> None:  # noqa: B027 - optional hook, empty on purpose
        """Check the task against the database before it is saved (Jobs check their graph)."""

    def revision(self) -> str | None:
        """The revision of the code this task runs (a git hash); recorded per instance."""
        return None

    # -- parameters -------------------------------------------------------------------

    @classmethod
    def param_fields(cls) -> tuple[attrs.Attribute[Any], ...]:
        """The fields a subclass declared: everything but the common task settings."""
        common = {a.name for a in attrs.fields(Task)}
        return tuple(a for a in attrs.fields(cls) if a.name not in common)

    def params(self) -> dict[str, Any]:
        """The subclass's fields as a JSON-ready dict (validated, so it loads back identically)."""
        values = {a.name: getattr(self, a.name) for a in self.param_fields()}
        check_params(type(self), values)
        return values

    def settings(self) -> dict[str, Any]:
        """The common settings, as stored in the task's own columns."""
        out = {name: getattr(self, name) for name in TASK_SETTINGS}
        out["retry_on"] = list(self.retry_on)
        return out

    @classmethod
    def from_params(
        cls, *, name: str, params: Mapping[str, Any], stored: bool = False, **settings: Any
    ) -> Task:
        """Rebuild a task from its stored name, params and settings, validating the params.

        ``stored``: the params were read back from the database, so they are JSON
        already and only their fit to the class's fields is checked.
        """
        check_params(cls, params, stored=stored)
        try:
            task = cls(name=name, **settings, **dict(params))
        except TypeError as exc:
            raise InvalidTaskParams(cls.type_name, str(exc)) from None
        return task


_JSON_SCALARS: dict[type, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    float: (int, float),
    bool: (bool,),
    type(None): (type(None),),
}


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a (resolved) type hint; unknown hints accept anything."""
    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint in _JSON_SCALARS:
        if isinstance(value, bool) and hint is not bool:
            return False  # True is an int to Python, never to a user
        return isinstance(value, _JSON_SCALARS[hint])
    if hint in (list, tuple) or origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(hint)
        return not args or all(_matches(v, args[0]) for v in value)
    if hint is dict or origin in (dict, Mapping):
        if not isinstance(value, dict):
            return False
        args = typing.get_args(hint)
        return len(args) != 2 or all(
            isinstance(k, str) and _matches(v, args[1]) for k, v in value.items()
        )
    return True


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def coerce_param(cls: type[Task], name: str, raw: str) -> Any:
    """A command-line value for parameter ``name``: kept as text where the field takes
    text, parsed as JSON otherwise (so ``command=true`` stays the string ``"true"``)."""
    attrs.resolve_types(cls)
    field = next((a for a in cls.param_fields() if a.name == name), None)
    if field is None or field.type is None or _matches(raw, field.type):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def check_params(cls: type[Task], params: Mapping[str, Any], *, stored: bool = False) -> None:
    """Raise :class:`InvalidTaskParams` unless ``params`` fit ``cls``'s fields and are JSON
    (``stored``: they were loaded from JSON, skip that part)."""
    fields = _param_spec(cls)
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise InvalidTaskParams(cls.type_name, f"unknown parameter(s) {', '.join(unknown)}")
    for name, field in fields.items():
        if name not in params:
            if field.default is attrs.NOTHING:
                raise InvalidTaskParams(cls.type_name, f"missing parameter {name!r}")
            continue
        value = params[name]
        if field.type is not None and not _matches(value, field.type):
            raise InvalidTaskParams(
                cls.type_name, f"parameter {name!r} = {value!r} is not {_type_name(field.type)}"
            )
    if stored:
        return
    try:
        json.dumps(dict(params), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidTaskParams(cls.type_name, f"parameters are not JSON: {exc}") from None


@functools.lru_cache(maxsize=256)
def _param_spec(cls: type[Task]) -> dict[str, attrs.Attribute[Any]]:
    """A class's param fields by name, type hints resolved: once per class, not per run."""
    if "__attrs_attrs__" not in cls.__dict__:  # inherited from Task is not enough
        raise InvalidTaskParams(
            cls.__name__, "a Task subclass must be decorated with @attrs.define(kw_only=True)"
        )
    attrs.resolve_types(cls)
    return {a.name: a for a in cls.param_fields()}


@attrs.frozen(kw_only=True)
class QueueItem:
    """One instance handed to a queue."""

    instance_id: int
    task_type: str
    priority: int = 0
    #: Not to be claimed before this time (a retry's backoff); None means at once.
    available_at: datetime | None = None


class Queue(abc.ABC):
    """Where QUEUED instances wait for an executor.

    Delivery may be at-least-once (SQS); running is exactly-once because :meth:`claim`
    must move each instance QUEUED → RUNNING with the conditional update
    :meth:`norc.store.seam.QueueStore.mark_running`, which only one claimant wins.

    ``db`` is the queue's way to Norc's database: a :class:`norc.store.seam.QueueStore`
    (a queue that keeps its items in Norc's own database may rely on the wider
    :class:`~norc.store.seam.SQLQueueStore`). A queue may call what those protocols
    list and nothing else of the store.
    """

    #: The name queues of this type are created with (``norc queue create -t NAME``).
    type_name: ClassVar[str]

    def __init__(self, *, name: str, settings: Mapping[str, Any], db: QueueStore) -> None:
        self.name = name
        self.settings = dict(settings)
        self.db = db

    @classmethod
    def validate_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Check settings before a queue of this type is created; raise a ``NorcError``."""
        return dict(settings)

    @abc.abstractmethod
    def push(self, items: Sequence[QueueItem], tx: Transaction) -> None:
        """Make QUEUED instances available to claimants.

        Called inside the transaction ``tx`` that set them QUEUED: a database-backed
        queue writes in it, an external one registers ``tx.after_commit`` so that no
        message announces an instance that was rolled back.
        """

    def create_and_push(self, task: int | str, count: int, priority: int) -> list[int] | None:
        """Optionally create ``count`` QUEUED instances of a task and push them in one
        statement that commits on its own; return their ids in order.

        Norc's enqueue tries this first. Return None to decline, with nothing written:
        Norc then runs its general enqueue transaction (read the task, apply its
        overlap policy, insert, :meth:`push`). A queue that accepts must create only
        runs that policy lets through without looking at other runs (``allow``,
        ``queue``) and leave every other case, an unknown task included, to the general
        path. The built-in ``dbqueue`` does it on PostgreSQL, saving four of the
        enqueue's five round trips; other queues need not.
        """
        return None

    @abc.abstractmethod
    def claim(self, claimant: Claimant, limit: int, timeout: float) -> list[int]:
        """Wait at most ``timeout`` seconds for work; return up to ``limit`` instance ids.

        Every id returned was moved QUEUED → RUNNING for ``claimant`` by this call.
        Return early (possibly empty) when :meth:`wake` is called.
        """

    @abc.abstractmethod
    def release(self, instance_ids: Sequence[int], tx: Transaction) -> None:
        """Forget finished instances; called in the transaction that records their end."""

    #: Whether :meth:`give_back` works; executors claim ahead of idle slots only from
    #: queues that can take claimed instances back.
    can_give_back: ClassVar[bool] = False

    def give_back(self, instance_ids: Sequence[int], tx: Transaction) -> None:
        """Offer claimed, never started instances (QUEUED again) to claimants once more."""
        raise NotImplementedError(f"{type(self).__name__} cannot take instances back")

    @abc.abstractmethod
    def count(self) -> int:
        """How many instances wait in the queue (approximate for external queues)."""

    @abc.abstractmethod
    def peek(self, limit: int = 10) -> list[int]:
        """Ids of the next instances to be claimed, in claim order, without claiming them."""

    def wake(self) -> None:  # noqa: B027 - optional for queues that never block
        """Make a :meth:`claim` that is waiting return now (used when an executor stops)."""

    def close(self) -> None:  # noqa: B027 - optional for queues without resources
        """Release connections or clients held by this queue object."""


class LogStore(abc.ABC):
    """Keeps finished logs somewhere other hosts can read them.

    Executors always write logs to local files first (``NORC_LOG_DIR``); when a log is
    complete Norc hands it to the configured log store with :meth:`save`. Readers try
    the local file first, then :meth:`open`.
    """

    #: The name used in configuration (``log_store = "s3"``).
    store_name: ClassVar[str]

    def __init__(self, *, settings: Mapping[str, Any], log_dir: Path) -> None:
        self.settings = dict(settings)
        self.log_dir = log_dir

    @classmethod
    def validate_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Check settings when a handle is configured with this store; raise a NorcError."""
        return dict(settings)

    @abc.abstractmethod
    def save(self, key: str, local_path: Path) -> str | None:
        """Keep the finished log at ``local_path`` under ``key``; return where it went.

        May raise; Norc logs the failure with the store's name and the instance keeps
        its outcome.
        """

    @abc.abstractmethod
    def open(self, key: str) -> bytes | None:
        """Return the stored log for ``key``, or None if this store does not have it."""
