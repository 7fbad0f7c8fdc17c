"""Sending the outbox: claim due rows, compose each message, send it, record the attempt.

Any live daemon's housekeeping wakes its handle's :class:`AlertSender`, a thread of its
own, so a slow SMTP server never delays a heartbeat. A row is claimed with a
conditional update (its attempts and due time as read), so of several daemons exactly
one sends it; the claim also moves its due time a lease ahead, so a sender that died
mid-send leaves the row due again (then, and only then, a message may go out twice).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import attrs
import sqlalchemy as sa
import structlog

from norc.alerts.channels import AlertError, Channel, Notification
from norc.alerts.events import insert_notifications, notification_row
from norc.alerts.rules import AlertRule, load_rules
from norc.errors import LogNotFound, NorcError
from norc.store.schema import alert_rules, notifications, utcnow

if TYPE_CHECKING:
    from norc.app import Norc

log = structlog.get_logger("norc.alerts")

#: How long a claimed row is its sender's before it is due again (a send that hangs
#: past this is bounded by the channels' own timeouts, well below it).
LEASE: Final = timedelta(seconds=120)
#: Rows claimed per round.
BATCH: Final = 50
#: Lines of the instance log a message ends with.
LOG_LINES: Final = 20
RATE_WINDOW: Final = 60.0
#: Seconds between a handle's looks for silent tasks.
SILENT_CHECK: Final = 5.0


@attrs.frozen(kw_only=True)
class NotificationRecord:
    """One outbox row, as ``norc alert history`` shows it."""

    id: int
    rule: str | None
    event: str
    subject: str
    instance_id: int | None
    daemon_id: int | None
    schedule_id: int | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (ISO 8601 times)."""
        return {
            k: (v.isoformat() if isinstance(v, datetime) else v)
            for k, v in attrs.asdict(self).items()
        }


def history(app: Norc, *, rule: str | None = None, limit: int = 100) -> list[NotificationRecord]:
    """The newest outbox rows first (all rules, or the one named)."""
    query = (
        sa.select(notifications, alert_rules.c.name.label("rule_name"))
        .outerjoin(alert_rules, alert_rules.c.id == notifications.c.rule_id)
        .order_by(notifications.c.id.desc())
        .limit(limit)
    )
    if rule is not None:
        query = query.where(alert_rules.c.name == rule)
    with app.db.reading() as conn:
        return [
            NotificationRecord(
                id=int(r.id),
                rule=r.rule_name,
                event=r.event,
                subject=r.subject,
                instance_id=r.instance_id,
                daemon_id=r.daemon_id,
                schedule_id=r.schedule_id,
                status=r.status,
                attempts=int(r.attempts),
                next_attempt_at=r.next_attempt_at,
                last_error=r.last_error,
                created_at=r.created_at,
                sent_at=r.sent_at,
            )
            for r in conn.execute(query)
        ]


def channel_for(app: Norc, rule: AlertRule) -> Channel:
    """The rule's channel object, built from its type in the handle's registry."""
    cls = app.registry.channel_type(rule.channel)
    return cls(target=rule.target, options=rule.options, settings=app.settings)


def deliver_due(app: Norc, *, now: datetime | None = None) -> int:
    """Claim and send every due notification, in rounds; returns how many were sent."""
    sent = 0
    while True:
        done, claimed = _round(app, now or utcnow())
        sent += done
        if not claimed:
            return sent


def _round(app: Norc, now: datetime) -> tuple[int, int]:
    with app.db.reading() as conn:
        due = conn.execute(
            sa.select(notifications)
            .where(notifications.c.status == "pending", notifications.c.next_attempt_at <= now)
            .order_by(notifications.c.id)
            .limit(BATCH)
        ).all()
    if not due:
        return 0, 0
    rules = {r.id: r for r in load_rules(app.db)}
    by_rule: dict[int, list[Any]] = defaultdict(list)
    for row in due:
        by_rule[int(row.rule_id)].append(row)
    sent = claimed = 0
    for rule_id, rows in by_rule.items():
        rule = rules.get(rule_id)
        if rule is None or not rule.enabled:
            for row in rows:
                _finish(app, row, "failed", "its alert rule was removed or disabled")
            continue
        budget = _budget(app, rule, now)
        for row in rows:
            if row.event == "output" and not _printed(app, row.instance_id):
                _drop_silent_run(app, row)
                continue
            if row.event not in ("summary", "test") and budget is not None and budget <= 0:
                if _suppress(app, rule, row, now):
                    claimed += 1
                continue
            if not _claim(app, row, now):
                continue  # another daemon took it
            claimed += 1
            if row.event not in ("summary", "test") and budget is not None:
                budget -= 1
            if send_one(app, rule, row, attempts=int(row.attempts) + 1):
                sent += 1
    return sent, claimed


def _printed(app: Norc, instance_id: int | None) -> bool:
    """Whether the instance's log has a line of its own output (not Norc's ``[norc]``)."""
    if instance_id is None:
        return False
    try:
        text = app.logs(instance_id)
    except (NorcError, OSError):
        return True  # no log to judge by: tell rather than stay silent
    return any(line.strip() and not line.startswith("[norc] ") for line in text.splitlines())


def _drop_silent_run(app: Norc, row: Any) -> None:
    with app.db.transaction() as tx:
        tx.conn.execute(
            sa.update(notifications)
            .where(
                notifications.c.id == row.id,
                notifications.c.status == "pending",
                notifications.c.attempts == row.attempts,
            )
            .values(status="skipped", last_error="the run printed nothing")
        )


def _budget(app: Norc, rule: AlertRule, now: datetime) -> int | None:
    """How many more this rule may send in the current minute (None: no limit)."""
    if rule.rate_limit <= 0:
        return None
    with app.db.reading() as conn:
        recent = conn.execute(
            sa.select(sa.func.count())
            .select_from(notifications)
            .where(
                notifications.c.rule_id == rule.id,
                notifications.c.status == "sent",
                notifications.c.sent_at > now - timedelta(seconds=RATE_WINDOW),
                notifications.c.event.not_in(["summary", "test"]),
            )
        ).scalar_one()
    return rule.rate_limit - int(recent)


def _claim(app: Norc, row: Any, now: datetime) -> bool:
    with app.db.transaction() as tx:
        return bool(
            tx.conn.execute(
                sa.update(notifications)
                .where(
                    notifications.c.id == row.id,
                    notifications.c.status == "pending",
                    notifications.c.attempts == row.attempts,
                )
                .values(attempts=row.attempts + 1, next_attempt_at=now + LEASE)
            ).rowcount
        )


def _suppress(app: Norc, rule: AlertRule, row: Any, now: datetime) -> bool:
    """Fold a notification over the rule's rate into the minute's one summary."""
    window = int(now.timestamp() // RATE_WINDOW)
    start = datetime.fromtimestamp(window * RATE_WINDOW, now.tzinfo)
    end = start + timedelta(seconds=RATE_WINDOW)
    with app.db.transaction() as tx:
        won = tx.conn.execute(
            sa.update(notifications)
            .where(
                notifications.c.id == row.id,
                notifications.c.status == "pending",
                notifications.c.attempts == row.attempts,
            )
            .values(
                status="suppressed",
                next_attempt_at=now,  # when it was folded: the summary counts by this
                last_error=f"over the rate limit of {rule.rate_limit} a minute:"
                " counted in the summary sent at the end of the minute",
            )
        ).rowcount
        if won:
            insert_notifications(
                tx,
                app.db.dialect,
                [
                    notification_row(
                        rule,
                        "summary",
                        f"summary:{window}",
                        now,
                        payload={"from": start.isoformat(), "to": end.isoformat()},
                        due=end,
                    )
                ],
            )
    return bool(won)


def send_one(app: Norc, rule: AlertRule, row: Any, *, attempts: int) -> bool:
    """Compose and send one claimed row, then record the attempt; True if it went out."""
    channel: Channel | None = None
    try:
        channel = channel_for(app, rule)
        channel.send(compose(app, rule, row))
    except Exception as exc:  # noqa: BLE001 - any failure of a channel is retried later
        error = _scrub(f"{type(exc).__name__}: {exc}", channel)
        if attempts >= rule.max_attempts:
            _finish(app, row, "failed", error)
            log.error("notification failed for good", rule=rule.name, id=row.id, error=error)
        else:
            delay = min(3600.0, rule.retry_delay * 2 ** (attempts - 1))
            _retry_later(app, row, attempts, delay, error)
            log.warning("notification failed; retrying", rule=rule.name, id=row.id, error=error)
        return False
    _finish(app, row, "sent", None)
    log.info("notification sent", rule=rule.name, id=row.id, alert_event=row.event)
    return True


def _scrub(text: str, channel: Channel | None) -> str:
    for secret in channel.secrets() if channel is not None else ():
        if secret:
            text = text.replace(secret, "***")
    return text


def _finish(app: Norc, row: Any, status: str, error: str | None) -> None:
    with app.db.transaction() as tx:
        tx.conn.execute(
            sa.update(notifications)
            .where(notifications.c.id == row.id)
            .values(
                status=status,
                last_error=error,
                sent_at=utcnow() if status == "sent" else None,
            )
        )


def _retry_later(app: Norc, row: Any, attempts: int, delay: float, error: str) -> None:
    with app.db.transaction() as tx:
        tx.conn.execute(
            sa.update(notifications)
            .where(notifications.c.id == row.id, notifications.c.attempts == attempts)
            .values(next_attempt_at=utcnow() + timedelta(seconds=delay), last_error=error)
        )


# -- composing ---------------------------------------------------------------------------


def compose(app: Norc, rule: AlertRule, row: Any) -> Notification:
    """The message for an outbox row, read fresh from the database and the log store."""
    event = row.event
    payload = dict(row.payload or {})
    data: dict[str, Any] = {
        "notification_id": int(row.id),
        "rule": rule.name,
        "event": event,
        "subject": row.subject,
        "created_at": row.created_at.isoformat(),
        "instance": None,
        "daemon": None,
        "schedule_id": row.schedule_id,
        "details": payload,
        "log_tail": [],
        "url": None,
    }
    lines: list[str] = []
    title = f"[norc] {event}"
    if row.instance_id is not None:
        found = app.db.instances_by_id([int(row.instance_id)])
        if found:
            instance = found[0]
            data["instance"] = instance.to_json()
            data["instance"]["status"] = instance.status.value
            title = (
                f"[norc] {event}: {instance.task_name} instance {instance.id}"
                f" {instance.status.value} (attempt {instance.attempt})"
            )
            lines += [
                f"Task:     {instance.task_name}",
                f"Instance: {instance.id}",
                f"Status:   {instance.status.value}",
                f"Attempt:  {instance.attempt}",
                f"Host:     {instance.host or '-'}",
                f"Queue:    {instance.queue}",
            ]
            for label, moment in (
                ("Fire time", instance.fire_time),
                ("Queued", instance.enqueued_at),
                ("Started", instance.started_at),
                ("Ended", instance.ended_at),
            ):
                if moment is not None:
                    lines.append(f"{label + ':':<10}{moment.isoformat(timespec='seconds')}")
            if instance.duration is not None:
                lines.append(f"Duration: {instance.duration:.3f} s")
            if instance.error:
                lines.append(f"Error:    {instance.error}")
            data["log_tail"] = _log_tail(app, instance.id)
            if app.settings.web_url:
                data["url"] = f"{app.settings.web_url.rstrip('/')}/#/instance/{instance.id}"
    if event == "daemon" and row.daemon_id is not None:
        found_daemons = app.db.daemons(daemon_id=int(row.daemon_id))
        if found_daemons:
            daemon = found_daemons[0]
            data["daemon"] = daemon.to_json()
            title = f"[norc] daemon: {daemon.kind} {daemon.id} on {daemon.host} settled dead"
            lines += [
                f"Daemon:   {daemon.kind} {daemon.id} (pid {daemon.pid})",
                f"Host:     {daemon.host}",
                f"Status:   {daemon.status}",
                f"Reason:   {payload.get('reason', daemon.error or '-')}",
            ]
    elif event == "late" and row.instance_id is None:
        title = f"[norc] late: {payload.get('task')} (schedule {row.schedule_id}) did not start"
    if event == "late":
        lines += [
            f"Schedule: {row.schedule_id}",
            f"Due at:   {payload.get('fire_time')}",
            f"Not started {payload.get('late_after', 0):g} s after its fire time.",
        ]
    elif event == "silent":
        title = f"[norc] silent: {payload.get('task')} has not succeeded"
        lines += [
            f"Task:     {payload.get('task')}",
            f"No SUCCESS since {payload.get('since')} (window {payload.get('within', 0):g} s).",
        ]
    elif event == "summary":
        count, samples = _suppressed(app, rule, payload)
        data["details"] = {**payload, "suppressed": count, "examples": samples}
        title = f"[norc] {count} more notification(s) of alert {rule.name!r} held back"
        lines += [
            f"Over the rate limit of {rule.rate_limit} a minute, between"
            f" {payload.get('from')} and {payload.get('to')}: {count} notification(s)"
            " not sent one by one.",
            *(f"  {s}" for s in samples),
        ]
    elif event == "test":
        title = f"[norc] test notification of alert {rule.name!r}"
        lines.append("This is a test: the alert rule can reach you.")
    lines.insert(0, f"Alert:    {rule.name} ({event})")
    if data["url"]:
        lines.append(f"Link:     {data['url']}")
    if data["log_tail"]:
        lines += ["", f"Last {len(data['log_tail'])} line(s) of the log:", *data["log_tail"]]
    text = "\n".join(lines) + "\n"
    data["title"], data["text"] = title, text
    return Notification(title=title, text=text, data=data)


def _log_tail(app: Norc, instance_id: int) -> list[str]:
    try:
        text = app.logs(instance_id)
    except (LogNotFound, NorcError, OSError):
        return []
    return text.splitlines()[-LOG_LINES:]


def _suppressed(app: Norc, rule: AlertRule, payload: dict[str, Any]) -> tuple[int, list[str]]:
    start = datetime.fromisoformat(payload["from"])
    end = datetime.fromisoformat(payload["to"])
    with app.db.reading() as conn:
        rows = conn.execute(
            sa.select(notifications.c.event, notifications.c.subject)
            .where(
                notifications.c.rule_id == rule.id,
                notifications.c.status == "suppressed",
                notifications.c.next_attempt_at >= start,
                notifications.c.next_attempt_at < end,
            )
            .order_by(notifications.c.id)
        ).all()
    return len(rows), [f"{r.event} {r.subject}" for r in rows[:10]]


def send_test(app: Norc, name: str) -> NotificationRecord:
    """Send a test notification for rule ``name`` now, from this process; the attempt
    is recorded in the history. Raises :class:`AlertError` if it could not be sent."""
    found = load_rules(app.db, name=name)
    if not found:
        raise AlertError(f"no alert named {name!r}")
    rule = found[0]
    now = utcnow()
    subject = f"test:{uuid.uuid4()}"
    # Claimed from the start (one attempt, due only once its lease is over): no daemon's
    # sender takes it while this process sends it.
    row_values = {**notification_row(rule, "test", subject, now, due=now + LEASE), "attempts": 1}
    with app.db.transaction() as tx:
        insert_notifications(tx, app.db.dialect, [row_values])
    with app.db.reading() as conn:
        row = conn.execute(
            sa.select(notifications).where(
                notifications.c.rule_id == rule.id, notifications.c.subject == subject
            )
        ).one()
    ok = send_one(
        app, attrs.evolve(rule, options={**rule.options, "max_attempts": 1}), row, attempts=1
    )
    record = next(r for r in history(app, rule=name, limit=BATCH) if r.id == row.id)
    if not ok:
        raise AlertError(f"alert {name!r}: the test notification failed: {record.last_error}")
    return record


class AlertSender:
    """A handle's sending thread, woken by housekeeping (started at the first wake)."""

    def __init__(self, app: Norc) -> None:
        self._app = app
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._silent_checked = float("-inf")

    def silent_check_due(self) -> bool:
        """Whether to look for silent tasks now: a query per task matched, so once per
        :data:`SILENT_CHECK` seconds at most (silence windows are hours, not seconds)."""
        now = time.monotonic()
        if now - self._silent_checked < SILENT_CHECK:
            return False
        self._silent_checked = now
        return True

    def wake(self) -> None:
        """Look for due notifications soon (from a heartbeat's housekeeping)."""
        with self._lock:
            if self._stop.is_set():
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="norc-alert-sender", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def stop(self, timeout: float | None = 15.0) -> None:
        """End the thread (after the send in progress, if any)."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                deliver_due(self._app)
            except Exception:
                with contextlib.suppress(Exception):
                    log.warning(
                        "sending notifications failed; retrying at the next beat", exc_info=True
                    )


def deliver_from_housekeeping(app: Norc, sender: AlertSender | None) -> None:
    """Housekeeping's share: record late/silent events, then wake the sender."""
    if not app.alert_rules.current():
        return
    from norc.alerts.events import check_overdue

    check_overdue(app, silent=sender is None or sender.silent_check_due())
    if sender is not None:
        sender.wake()
