"""Alert rules: what they say, how they are stored, and each handle's cache of them."""

from __future__ import annotations

import fnmatch
import re
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import attrs
import sqlalchemy as sa

from norc.alerts.channels import AlertError
from norc.store.schema import alert_rules, notifications, utcnow

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from norc.store.database import Database

#: The events a rule can name (docs/alerts.md says when each happens).
EVENTS: Final = (
    "failure",
    "success",
    "recovered",
    "output",
    "late",
    "missed",
    "silent",
    "daemon",
)
#: Events about one instance's end, recorded by whoever records that end.
END_EVENTS: Final = frozenset({"failure", "success", "recovered", "output"})

DEFAULT_LATE_AFTER: Final = 60.0
DEFAULT_RATE_LIMIT: Final = 10  # notifications per rule and minute; the rest are summarised
DEFAULT_RETRY_DELAY: Final = 10.0  # seconds before the second attempt; doubles each time
DEFAULT_MAX_ATTEMPTS: Final = 10

#: How long a handle trusts its copy of the rules: the executor asks on every write.
CACHE_SECONDS: Final = 2.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(text: str | float, what: str = "duration") -> float:
    """Seconds from ``90``, ``30s``, ``15m``, ``26h``, ``2d``, ``1w``; raises AlertError."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if not match:
            raise AlertError(f"{what} {text!r} is not a duration (e.g. 90, 30s, 15m, 26h, 2d)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise AlertError(f"{what} must be positive, got {text!r}")
    return seconds


@attrs.frozen(kw_only=True)
class AlertRule:
    """One saved rule: these ``events`` of the tasks matching ``task_glob`` (and of
    ``schedule_id``'s fires, when set) go to ``target`` through ``channel``."""

    id: int
    name: str
    events: frozenset[str]
    task_glob: str | None
    schedule_id: int | None
    channel: str
    target: str
    options: Mapping[str, Any]
    enabled: bool
    created_at: datetime

    def matches(self, task_name: str | None, schedule_id: int | None) -> bool:
        """Whether an event about this task (and schedule) concerns the rule."""
        if self.schedule_id is not None and schedule_id != self.schedule_id:
            return False
        if self.task_glob is not None:
            return task_name is not None and fnmatch.fnmatchcase(task_name, self.task_glob)
        return True

    @property
    def late_after(self) -> float:
        """Seconds after its fire time a fire not yet started is ``late``."""
        return float(self.options.get("late_after", DEFAULT_LATE_AFTER))

    @property
    def within(self) -> float | None:
        """The ``silent`` window in seconds."""
        value = self.options.get("within")
        return None if value is None else float(value)

    @property
    def rate_limit(self) -> int:
        """Notifications per minute sent for this rule (0: no limit)."""
        return int(self.options.get("rate_limit", DEFAULT_RATE_LIMIT))

    @property
    def retry_delay(self) -> float:
        """Seconds before the second attempt of a failed send (doubling after)."""
        return float(self.options.get("retry_delay", DEFAULT_RETRY_DELAY))

    @property
    def max_attempts(self) -> int:
        """Attempts before a notification is given up as failed."""
        return int(self.options.get("max_attempts", DEFAULT_MAX_ATTEMPTS))


def _record(row: Any) -> AlertRule:
    return AlertRule(
        id=int(row.id),
        name=row.name,
        events=frozenset(row.events),
        task_glob=row.task_glob,
        schedule_id=row.schedule_id,
        channel=row.channel,
        target=row.target,
        options=dict(row.options or {}),
        enabled=bool(row.enabled),
        created_at=row.created_at,
    )


def load_rules(
    db: Database, *, name: str | None = None, conn: Connection | None = None
) -> list[AlertRule]:
    """Every rule (or the one named), in name order; on ``conn`` if given (a caller in a
    transaction reads on its own connection rather than checking out a second one)."""
    query = sa.select(alert_rules).order_by(alert_rules.c.name)
    if name is not None:
        query = query.where(alert_rules.c.name == name)
    if conn is not None:
        return [_record(row) for row in conn.execute(query)]
    with db.reading() as reader:
        return [_record(row) for row in reader.execute(query)]


def save_rule(
    db: Database,
    *,
    name: str,
    events: Sequence[str],
    task_glob: str | None,
    schedule_id: int | None,
    channel: str,
    target: str,
    options: Mapping[str, Any],
    replace: bool,
) -> AlertRule:
    """Insert a rule (or, with ``replace``, overwrite the one of that name)."""
    values = {
        "events": sorted(set(events)),
        "task_glob": task_glob,
        "schedule_id": schedule_id,
        "channel": channel,
        "target": target,
        "options": dict(options),
        "enabled": True,
    }
    with db.transaction() as tx:
        existing = tx.conn.execute(
            sa.select(alert_rules.c.id).where(alert_rules.c.name == name)
        ).scalar()
        if existing is not None:
            if not replace:
                raise AlertError(f"an alert named {name!r} exists (remove it, or replace it)")
            tx.conn.execute(
                sa.update(alert_rules).where(alert_rules.c.id == existing).values(**values)
            )
        else:
            tx.conn.execute(sa.insert(alert_rules).values(name=name, created_at=utcnow(), **values))
    return load_rules(db, name=name)[0]


def delete_rule(db: Database, name: str) -> None:
    """Remove a rule and its pending notifications (history of sent ones stays)."""
    with db.transaction() as tx:
        rule_id = tx.conn.execute(
            sa.select(alert_rules.c.id).where(alert_rules.c.name == name)
        ).scalar()
        if rule_id is None:
            raise AlertError(f"no alert named {name!r}")
        tx.conn.execute(sa.delete(alert_rules).where(alert_rules.c.id == rule_id))
        tx.conn.execute(
            sa.delete(notifications).where(
                notifications.c.rule_id == rule_id, notifications.c.status == "pending"
            )
        )


class RuleCache:
    """A handle's copy of the enabled rules, read again after :data:`CACHE_SECONDS`.

    The executor's recorder asks it on every write; with no rule that is one clock
    read and a comparison. A rule saved through another handle takes effect here
    within the cache's lifetime; through this handle, at once (:meth:`invalidate`).
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._rules: tuple[AlertRule, ...] = ()
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def current(self, conn: Connection | None = None) -> tuple[AlertRule, ...]:
        """The enabled rules, at most :data:`CACHE_SECONDS` old (read again on ``conn``,
        the caller's transaction's connection, when given)."""
        if time.monotonic() - self._read_at < CACHE_SECONDS:
            return self._rules
        with self._lock:
            if time.monotonic() - self._read_at >= CACHE_SECONDS:
                self._rules = tuple(r for r in load_rules(self._db, conn=conn) if r.enabled)
                self._read_at = time.monotonic()
        return self._rules

    def invalidate(self) -> None:
        """Forget the copy: the next question reads the rules again."""
        self._read_at = float("-inf")
