"""Saving rules with their input checked: what ``Norc.add_alert`` and ``norc alert add`` do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from norc.alerts.channels import AlertError
from norc.alerts.rules import EVENTS, AlertRule, parse_duration, save_rule
from norc.errors import UnknownChannel

if TYPE_CHECKING:
    from norc.app import Norc


def parse_events(on: str | Sequence[str]) -> list[str]:
    """``"failure,late"`` or a list: known event names, at least one."""
    items = on.split(",") if isinstance(on, str) else list(on)
    events = [e.strip().lower() for e in items if e.strip()]
    unknown = [e for e in events if e not in EVENTS]
    if unknown or not events:
        raise AlertError(
            f"unknown event(s) {', '.join(map(repr, unknown)) or 'none given'}"
            f" (choose from {', '.join(EVENTS)})"
        )
    return events


def add_alert(
    app: Norc,
    name: str,
    *,
    on: str | Sequence[str],
    task: str | None = None,
    schedule: int | None = None,
    email: str | None = None,
    smtp: str | None = None,
    webhook: str | None = None,
    format: str | None = None,
    channel: str | None = None,
    target: str | None = None,
    late_after: float | str | None = None,
    within: float | str | None = None,
    rate_limit: int | None = None,
    options: Mapping[str, Any] | None = None,
    replace: bool = False,
) -> AlertRule:
    """Check and save one rule; see :meth:`norc.Norc.add_alert`."""
    if not name or not name.strip() or len(name) > 255:
        raise AlertError(f"an alert needs a name of 1 to 255 characters, got {name!r}")
    events = parse_events(on)
    given = [c for c in (email and "email", webhook and "webhook", channel) if c]
    if len(given) != 1:
        raise AlertError(
            "give exactly one destination: an email address, a webhook URL or"
            " a channel with its target"
        )
    opts: dict[str, Any] = dict(options or {})
    if email:
        channel, target = "email", email
        if smtp:
            opts["smtp"] = smtp
    elif webhook:
        channel, target = "webhook", webhook
        opts["format"] = format or "json"
    elif not target:
        raise AlertError(f"channel {channel!r} needs a target")
    if smtp and channel != "email":
        raise AlertError("an SMTP URL goes with an email address only")
    if format and channel != "webhook":
        raise AlertError("a format goes with a webhook only")
    assert channel is not None and target is not None
    if late_after is not None:
        opts["late_after"] = parse_duration(late_after, "late-after")
    if within is not None:
        opts["within"] = parse_duration(within, "within")
    if "silent" in events and "within" not in opts:
        raise AlertError("a 'silent' alert needs a window: within (e.g. 26h)")
    if "within" in opts and "silent" not in events:
        raise AlertError("a window (within) goes with the 'silent' event only")
    if "late_after" in opts and "late" not in events:
        raise AlertError("late-after goes with the 'late' event only")
    if rate_limit is not None:
        if rate_limit < 0:
            raise AlertError(f"rate limit must be >= 0 (0: none), got {rate_limit}")
        opts["rate_limit"] = int(rate_limit)
    if schedule is not None:
        app.schedule(schedule)  # raises for an unknown schedule
    try:
        cls = app.registry.channel_type(channel)
    except UnknownChannel as exc:
        raise AlertError(str(exc)) from None
    cls.validate(target, opts)
    rule = save_rule(
        app.db,
        name=name,
        events=events,
        task_glob=task,
        schedule_id=schedule,
        channel=channel,
        target=target,
        options=opts,
        replace=replace,
    )
    app.alert_rules.invalidate()
    return rule


def describe(app: Norc, rule: AlertRule) -> dict[str, Any]:
    """A rule as ``norc alert list`` shows it: the destination without its secrets."""
    try:
        destination = app.registry.channel_type(rule.channel).describe(rule.target, rule.options)
    except UnknownChannel:
        destination = "(channel not installed here)"
    shown = {k: v for k, v in rule.options.items() if k in ("late_after", "within", "rate_limit")}
    return {
        "name": rule.name,
        "events": sorted(rule.events),
        "task": rule.task_glob,
        "schedule": rule.schedule_id,
        "channel": rule.channel,
        "destination": destination,
        "options": shown,
        "enabled": rule.enabled,
        "created_at": rule.created_at.isoformat(),
    }
