"""The tables, with SQLAlchemy Core. Alembic migrations in ``migrations/`` create exactly these.

All times are timezone-aware UTC (:class:`UTCDateTime` stores naive UTC on backends
without zone support and hands back aware values everywhere).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: 64-bit ids on servers; SQLite only auto-increments a plain INTEGER primary key.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC datetime in, an aware UTC datetime out, on every backend.

    Stored as naive UTC with microseconds (``DATETIME(6)`` on MariaDB), which sorts and
    indexes the same everywhere.
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: Norc stores aware UTC times only")
        return naive_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


Name = sa.String(255)

tasks = sa.Table(
    "norc_tasks",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", Name, nullable=False, unique=True),
    sa.Column("type", Name, nullable=False),
    # Where the class lives ("module:QualName"), so a worker can import it by itself.
    sa.Column("type_path", sa.String(500), nullable=False),
    sa.Column("plugin", Name, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("timeout", sa.Float, nullable=True),
    sa.Column("finally_timeout", sa.Float, nullable=False),
    # Retry policy: attempts after the first, and the backoff between them.
    sa.Column("max_retries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("retry_delay", sa.Float, nullable=False, server_default="1"),
    sa.Column("retry_backoff", sa.Float, nullable=False, server_default="2"),
    sa.Column("retry_max_delay", sa.Float, nullable=False, server_default="3600"),
    sa.Column("retry_jitter", sa.Float, nullable=False, server_default="0.1"),
    sa.Column("retry_on", sa.JSON, nullable=True),  # statuses that retry; None = default
    # What a new run does while an earlier one is active: allow|skip|queue|replace.
    sa.Column("overlap", sa.String(16), nullable=False, server_default="allow"),
    # At most this many instances RUNNING anywhere (None = no limit).
    sa.Column("concurrency_limit", sa.Integer, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

queues = sa.Table(
    "norc_queues",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", Name, nullable=False, unique=True),
    sa.Column("type", Name, nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# The seed's QueueGroup: executors consume its queues in priority order (first first).
queue_groups = sa.Table(
    "norc_queue_groups",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", Name, nullable=False, unique=True),
    sa.Column("queues", sa.JSON, nullable=False),  # member queue names, highest priority first
    sa.Column("created_at", UTCDateTime, nullable=False),
)

daemons = sa.Table(
    "norc_daemons",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # executor | scheduler
    sa.Column("host", Name, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("queue", Name, nullable=True),
    sa.Column("concurrency", sa.Integer, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("request", sa.String(16), nullable=True),
    sa.Column("heartbeat", UTCDateTime, nullable=True),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index(None, "kind", "status"),
    # Ids are never reused (SQLite would hand out a pruned max id again): logs are keyed by id.
    sqlite_autoincrement=True,
)

instances = sa.Table(
    "norc_instances",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("task_id", BigId, sa.ForeignKey("norc_tasks.id"), nullable=False),
    sa.Column("queue", Name, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, default=1),
    sa.Column("schedule_id", BigId, nullable=True),
    sa.Column("fire_time", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("enqueued_at", UTCDateTime, nullable=True),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("executor_id", BigId, nullable=True),
    sa.Column("host", Name, nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("revision", Name, nullable=True),
    sa.Column("log_key", sa.String(500), nullable=True),
    sa.Column("log_location", sa.String(1000), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    # Retries: every attempt is a row; later ones point at the first.
    sa.Column("first_attempt_id", BigId, nullable=True),
    # Jobs: a node's instance points at its Job instance and names its node.
    sa.Column("job_instance_id", BigId, nullable=True),
    sa.Column("job_node", Name, nullable=True),
    # One instance per schedule fire (and attempt): a second scheduler's insert fails here.
    sa.UniqueConstraint("schedule_id", "fire_time", "attempt"),
    # One instance per Job node and attempt: two parents ending together cannot both
    # start the child.
    sa.UniqueConstraint("job_instance_id", "job_node", "attempt"),
    sa.Index(None, "created_at"),
    sa.Index(None, "task_id", "created_at"),
    sa.Index(None, "status", "created_at"),
    sa.Index(None, "executor_id", "status"),
    # Ids are never reused (SQLite would hand out a pruned max id again): logs are keyed by id.
    sqlite_autoincrement=True,
)

schedules = sa.Table(
    "norc_schedules",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("task_id", BigId, sa.ForeignKey("norc_tasks.id"), nullable=False),
    sa.Column("queue", Name, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("kind", sa.String(16), nullable=False),  # simple | cron
    # cron: the canonical spec text; simple: empty (start_at and period say it all).
    sa.Column("spec", sa.String(500), nullable=False, default=""),
    sa.Column("timezone", sa.String(64), nullable=False, default="UTC"),
    sa.Column("start_at", UTCDateTime, nullable=True),
    sa.Column("period", sa.Float, nullable=True),
    sa.Column("repetitions", sa.Integer, nullable=False, default=0),  # 0 = forever
    sa.Column("remaining", sa.Integer, nullable=True),  # None = forever
    sa.Column("make_up", sa.Boolean, nullable=False, default=False),
    # Overrides the task's overlap policy for this schedule's fires (None: the task's).
    sa.Column("overlap", sa.String(16), nullable=True),
    # The next fire not yet handled; None once the schedule has run out.
    sa.Column("next_fire_at", UTCDateTime, nullable=True),
    sa.Column("claimed_by", BigId, nullable=True),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    # Bumped by every edit, so schedulers notice a change without comparing fields.
    sa.Column("revision", sa.Integer, nullable=False, default=1),
    # Why a scheduler set this schedule aside (firing it failed for a reason that is
    # not a database outage); None while it fires. Editing or resuming it clears this.
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index(None, "claimed_by", "updated_at"),
    sa.Index(None, "lease_until"),
    sa.Index(None, "task_id"),
)

# The DBQueue's waiting room. A row lives from push until its instance has ended (it is
# marked claimed, not deleted, when taken), so a crashed executor loses nothing, and the
# table stays as small as the work in flight however long the history grows.
queue_items = sa.Table(
    "norc_queue_items",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("queue", Name, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column(
        "instance_id", BigId, sa.ForeignKey("norc_instances.id"), nullable=False, unique=True
    ),
    sa.Column("enqueued_at", UTCDateTime, nullable=False),
    sa.Column("claimed_by", BigId, nullable=True),
    sa.Column("claimed_at", UTCDateTime, nullable=True),
    # Not claimable before this time (retry backoff, concurrency-limit deferral).
    sa.Column("available_at", UTCDateTime, nullable=True),
)
# Claim order is highest priority first, then FIFO: the index matches it exactly.
sa.Index(
    "ix_norc_queue_items_claim",
    queue_items.c.queue,
    queue_items.c.claimed_by,
    queue_items.c.priority.desc(),
    queue_items.c.id,
)


# Alert rules (docs/alerts.md): which events of which tasks go to which channel.
alert_rules = sa.Table(
    "norc_alert_rules",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", Name, nullable=False, unique=True),
    sa.Column("events", sa.JSON, nullable=False),  # a list of event names
    sa.Column("task_glob", Name, nullable=True),  # fnmatch pattern on task names; None: all
    sa.Column("schedule_id", BigId, nullable=True),
    sa.Column("channel", Name, nullable=False),  # a channel type: email, webhook, ...
    sa.Column("target", sa.String(1000), nullable=False),  # an address, a URL
    # The channel's own options (smtp URL, format) and the events' (late_after, within,
    # rate_limit); may hold secrets, which `alert list` never shows.
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sqlite_autoincrement=True,
)

# The notification outbox: one row per event to tell a rule about, written in the
# transaction of the change that caused it and sent by whichever daemon claims it.
notifications = sa.Table(
    "norc_notifications",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("rule_id", BigId, nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    # What the event is about, as text ("instance:12", "daemon:3", "fire:4:<time>"):
    # with the rule and event, unique, so an event is enqueued once whoever sees it.
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("instance_id", BigId, nullable=True),
    sa.Column("daemon_id", BigId, nullable=True),
    sa.Column("schedule_id", BigId, nullable=True),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending|sent|failed|suppressed
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    # Due at this time; a claim pushes it forward by a lease, so a sender that died
    # mid-send leaves the row due again once the lease is over.
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("rule_id", "event", "subject"),
    sa.Index(None, "status", "next_attempt_at"),
    sa.Index(None, "rule_id", "status", "sent_at"),
    sqlite_autoincrement=True,
)

# One row, written with the schema: who this database is. Every log key starts with its
# id, so databases sharing a log directory or a bucket never write to the same log.
installation = sa.Table(
    "norc_installation",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # a uuid4, in its canonical text
    sa.Column("created_at", UTCDateTime, nullable=False),
    # Daemons up to this id ran before revision 0005 and keep the old log layout
    # (``executors/executor-<id>``); None: every daemon of this database is newer.
    sa.Column("legacy_daemon_id", BigId, nullable=True),
)


def utcnow() -> datetime:
    """Now, aware, in UTC: the only clock Norc stores."""
    return datetime.now(UTC)


def naive_utc(value: datetime | None) -> datetime | None:
    """How :class:`UTCDateTime` stores a time; also for statements that bypass its bind
    processing (arrays bound to PostgreSQL ``unnest``, SQLite's JSON batch write)."""
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)
