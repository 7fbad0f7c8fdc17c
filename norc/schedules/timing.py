"""When a schedule fires: one small interface over simple (period) and cron timings."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import attrs

from norc.errors import InvalidSpec
from norc.schedules.cron import CronSpec, parse_cron, resolve_timezone

MAX_PERIOD: Final = timedelta(days=36525)
"""The longest period or start delay taken: 100 years (longer ones are mistakes)."""


def _show(value: object) -> str:
    """A value for a message, short even for an integer of thousands of digits."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        # str() of an int of more than 4300 digits raises ValueError.
        digits = int(value.bit_length() * math.log10(2)) + 1
        return f"{'-' if value < 0 else ''}<an integer of about {digits} digits>"
    if isinstance(value, float):
        return repr(value)
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"


def _seconds(value: object, name: str, shown: str | None) -> float:
    """``value`` as seconds: a real number or a timedelta, or an InvalidSpec naming it."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSpec(
            f"{name} must be a number of seconds or a timedelta, got"
            f" {type(value).__name__} {shown or _show(value)}"
        )
    if isinstance(value, int) and abs(value) > MAX_PERIOD.total_seconds():
        # float() of a huge int raises OverflowError.
        raise InvalidSpec(
            f"{name} {shown or _show(value)} seconds is longer than 100 years"
            f" ({MAX_PERIOD.total_seconds():.0f} seconds)"
        )
    return float(value)


def check_period(value: object, name: str = "every", *, shown: str | None = None) -> float:
    """A schedule's period in seconds, checked: finite, at least a microsecond, at most 100 years.

    ``value`` is a number of seconds or a timedelta; ``shown`` is how the user
    wrote it (the CLI's text), for the message. Anything else raises an
    :class:`~norc.errors.InvalidSpec` (a ValueError) naming ``name`` and the value.
    """
    seconds = _seconds(value, name, shown)
    what = shown or _show(value)
    if not math.isfinite(seconds):
        raise InvalidSpec(f"{name} {what} is not a finite number of seconds")
    if not seconds > 0:
        raise InvalidSpec(f"{name} must be > 0 seconds, got {what}")
    if seconds > MAX_PERIOD.total_seconds():
        raise InvalidSpec(
            f"{name} {what} seconds is longer than 100 years"
            f" ({MAX_PERIOD.total_seconds():.0f} seconds)"
        )
    if timedelta(seconds=seconds) <= timedelta(0):
        raise InvalidSpec(
            f"{name} {what} seconds rounds to zero: periods are counted in whole microseconds"
        )
    return seconds


def check_delay(value: object, name: str = "start") -> float:
    """A start delay in seconds (negative is in the past), finite and within 100 years."""
    seconds = _seconds(value, f"{name} delay", None)
    if not math.isfinite(seconds) or abs(seconds) > MAX_PERIOD.total_seconds():
        raise InvalidSpec(
            f"{name} delay {_show(value)} is not a number of seconds within 100 years of now"
        )
    return seconds


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
        if self.period is not None:
            check_period(self.period, "period")

    def next_after(self, after: datetime) -> datetime | None:
        """Start, or the first whole number of periods after it that lies after ``after``."""
        if after < self.start:
            return self.start.astimezone(UTC)
        if self.period is None:
            return None
        step = timedelta(seconds=self.period)
        k = math.floor((after - self.start) / step) + 1
        try:
            fire = self.start + k * step
            while fire <= after:  # float rounding of the division, never more than a step
                fire += step
            return fire.astimezone(UTC)
        except OverflowError:
            return None  # past year 9999: it never fires again


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
