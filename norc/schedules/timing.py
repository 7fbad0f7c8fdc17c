"""When a schedule fires: one small interface over simple (period) and cron timings."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Protocol

import attrs

from norc.errors import InvalidSpec
from norc.schedules.cron import CronSpec, parse_cron, resolve_timezone


class Timing(Protocol):
    """Fire times of one schedule."""

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire strictly after ``after`` (aware UTC), or None if there is none."""


@attrs.frozen
class SimpleTiming:
    """Fires at ``start``, then every ``period`` seconds (once, if ``period`` is None)."""

    start: datetime
    period: float | None

    def __attrs_post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise InvalidSpec(f"start {self.start.isoformat()} has no timezone")
        if self.period is not None and not self.period > 0:
            raise InvalidSpec(f"period must be > 0 seconds, got {self.period!r}")

    def next_after(self, after: datetime) -> datetime | None:
        """Start, or the first whole number of periods after it that lies after ``after``."""
        if after < self.start:
            return self.start.astimezone(UTC)
        if self.period is None:
            return None
        step = timedelta(seconds=self.period)
        k = math.floor((after - self.start) / step) + 1
        fire = self.start + k * step
        while fire <= after:  # float rounding of the division, never more than a step
            fire += step
        return fire.astimezone(UTC)


@attrs.frozen
class CronTiming:
    """Fires when a cron spec matches, in its IANA timezone."""

    spec: CronSpec
    timezone: str

    def next_after(self, after: datetime) -> datetime | None:
        """The cron spec's next fire after ``after``."""
        return self.spec.next_fire(after, self.timezone)


def timing_for(
    kind: str, spec: str, timezone: str, start_at: datetime | None, period: float | None
) -> Timing:
    """The timing of a stored schedule."""
    if kind == "cron":
        resolve_timezone(timezone)  # InvalidSpec for an unknown zone, before any use
        return CronTiming(parse_cron(spec), timezone)
    if kind == "simple":
        if start_at is None:
            raise InvalidSpec("a simple schedule needs a start time")
        return SimpleTiming(start_at, period)
    raise InvalidSpec(f"unknown schedule kind {kind!r} (simple or cron)")
