"""The adapter between Norc's cron-like spec strings and apscheduler triggers.

:func:`parse_cron` turns a spec string into a :class:`CronSpec`, whose
:meth:`~CronSpec.next_fire` gives fire times in any IANA timezone. Every parse
error is a :class:`norc.errors.InvalidSpec` naming the bad part.

Formats
=======

Which format a spec is in is decided by its first non-blank character:

* ``@`` -- a crontab alias: ``@yearly`` (``@annually``), ``@monthly``,
  ``@weekly``, ``@daily`` (``@midnight``), ``@hourly``; case-insensitive.
  Canonical form: the alias in lower case, with ``@annually`` and
  ``@midnight`` normalised to ``@yearly`` and ``@daily`` (aliases are kept,
  not expanded, so reports show them).
* a letter -- a predefined name or the seed's encoding. A crontab line can
  never start with a letter (its first field is a second or minute, which has
  no names), so the two never collide.

  - **Predefined names** ``HALFHOURLY``, ``HOURLY``, ``DAILY``, ``WEEKLY``,
    ``MONTHLY`` (case-insensitive). Each draws a random offset once, at parse
    time, which spreads the load of many tasks: HALFHOURLY a minute 0-29 and a
    second (fires at that minute and 30 minutes later), HOURLY a minute and a
    second, DAILY an hour, minute and second, WEEKLY a weekday and a time,
    MONTHLY a day 1-28 and a time. Canonical form: the upper-case name, one
    space, and the offset in canonical seed form, e.g.
    ``DAILY o*d*w*h13m42s7``; parsing that gives the same offset again (an
    offset that does not fit the name, say ``DAILY o*d*w*h*m0s0``, is
    rejected). The label is the bare name.
  - **Seed encoding** ``o*d*w*h*m*s*``: keys ``o`` (months 1-12), ``d`` (days
    1-31), ``w`` (weekday 0-6, 0 = Monday), ``h`` (hours 0-23), ``m`` (minutes
    0-59), ``s`` (seconds 0-59), each followed by ``*`` or a comma list of
    numbers. Long keys work too (``months``/``month``, ``day``/``days``,
    ``weekday``/``weekdays``/``daysofweek``, ``hour``/``hours``,
    ``minute``/``minutes``, ``second``/``seconds``/``sec``/``secs``); keys are
    case-insensitive, whitespace is ignored anywhere and keys may come in any
    order. A left-out field means every value, except the seconds: a missing
    ``s`` gets one random second, drawn once and fixed in the canonical form
    (so a seed ``h2m30`` does not fire 60 times a minute). Day *and* weekday
    must both match. Canonical form: all six keys in order ``o d w h m s``,
    each list sorted without duplicates, e.g. ``o*d*w*h2m30s17``.

* anything else -- a **crontab** line: 5 fields (minute hour day-of-month month
  day-of-week) or 6 with a leading seconds field, separated by ASCII whitespace
  (a no-break or other Unicode space is an error naming it). A crontab line
  with a command after the time fields is refused: a spec has no command.
  Fields take ``*``, numbers, ranges ``1-5``, steps ``*/15`` and ``10-50/20``,
  comma lists of those, month names ``JAN``-``DEC`` and day names
  ``SUN``-``SAT`` (case-insensitive, also in ranges like ``MON-FRI``). Standard
  cron meaning, as cronie (Vixie cron, Debian's cron) reads it, not
  apscheduler's: Sunday is 0 or 7; a day field whose text *starts* with ``*``
  (``*``, ``*/3``, ``*/1``) sets cronie's ``DOM_STAR``/``DOW_STAR`` (entry.c),
  and then a day must match both day fields (``0 0 */1 * 1`` is Mondays only);
  only when neither day field starts with ``*`` does a day match if *either*
  does (an :class:`~apscheduler.triggers.combining.OrTrigger` over two
  :class:`~apscheduler.triggers.cron.CronTrigger`). ``0-6`` or ``1-31`` do not
  start with ``*``, so they count as restricted. Canonical form: the fields
  joined by single spaces, upper-cased (so names read ``MON-FRI``); the numbers
  are kept as written.

Fire times and daylight saving time
===================================

The apscheduler triggers run in UTC over *wall-clock* times, so they only say
which local wall times match; this module then maps each matching wall time to
real instants in the schedule's timezone, as cronie's main loop (cron.c) does
when the zone's clock jumps.

* A job is a *wildcard* job when its minute **or** hour field starts with
  ``*`` (cronie's ``MIN_STAR | HR_STAR``, set in entry.c from the field's first
  character): ``*/15 2 * * *``, ``0 */2 * * *``, ``@hourly``; a seed spec with
  ``h*`` or ``m*`` (or without ``h`` or ``m``), HALFHOURLY and HOURLY. Every
  other job is a *fixed-time* job (``30 2 * * *``, ``0-59/15 2 * * *``,
  ``@daily``, DAILY). A 6-field spec is classed by its minute and hour fields
  too (cronie has no seconds field).
* A wall time that exists once fires once.
* A wall time skipped by a jump forward (Europe/Berlin 2026-03-29 02:00-03:00)
  fires once, at the jump (the transition instant, 03:00 local), for a
  fixed-time job, and not at all for a wildcard job (cronie's "medium" case:
  wildcard jobs run for the new wall time only, then fixed-time jobs for each
  skipped minute). Several skipped wall times of one job collapse into that one
  fire, which is also the fire of a matching 03:00. cronie sorts jumps by size:
  a jump of at most 4 minutes ("small") runs every job for the skipped minutes;
  one of 3 hours or more ("large", a zone changing its standard offset) runs
  none of them. DST jumps are 30 or 60 minutes.
* A wall time repeated by a jump back (Europe/Berlin 2026-10-25 02:00-03:00
  happens twice) fires in both passes, as the distinct real instants they are,
  for a wildcard job, and only in the first pass for a fixed-time job (cronie's
  "negative" case: only wildcard jobs run until the clock catches up). A jump
  back of more than 181 minutes ("large") fires every job in both passes.

:meth:`CronSpec.next_fire` returns the first fire strictly after the given
instant, so iterating it is strictly increasing and never repeats an instant.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import attrs
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from norc.errors import InvalidSpec

__all__ = [
    "PREDEFINED_NAMES",
    "CronSpec",
    "SpecKind",
    "next_fire_times",
    "parse_cron",
    "resolve_timezone",
]

SpecKind = Literal["seed", "crontab", "predefined"]
"""What kind of spec a :class:`CronSpec` was parsed from."""

PREDEFINED_NAMES: Final = ("HALFHOURLY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY")
"""The predefined schedule names, each with a random offset drawn at parse time."""

_ONE_SECOND: Final = timedelta(seconds=1)

# cronie's timeDiff classes (cron.c, main loop) as jump sizes: a gap of g skipped
# minutes has timeDiff g + 1 (small: <= 5, large: > 180); a fold of f repeated
# minutes has timeDiff 1 - f (large: < -180).
_SMALL_GAP: Final = timedelta(minutes=4)
_LARGE_GAP: Final = timedelta(minutes=180)
_LARGE_FOLD: Final = timedelta(minutes=182)

# Feb counts 29 days: a spec for Feb 29 is rare but possible, so only days no
# month ever has are rejected as impossible.
_MAX_DAYS: Final = dict(
    zip(range(1, 13), (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31), strict=True)
)

_Values = tuple[int, ...] | None
"""Sorted matching values of one field; None means every value (``*``)."""


# --------------------------------------------------------------------------- timezones


def resolve_timezone(tz: str | ZoneInfo) -> ZoneInfo:
    """Return the ZoneInfo for an IANA name; raise InvalidSpec for an unknown one."""
    if isinstance(tz, ZoneInfo):
        return tz
    if not isinstance(tz, str):
        raise InvalidSpec(f"a timezone must be an IANA name, got {type(tz).__name__}")
    try:
        return ZoneInfo(tz)
    # ZoneInfo reports a missing zone as a KeyError, a malformed key as a
    # ValueError and a directory name such as "Europe" as an OSError.
    except (KeyError, ValueError, OSError):
        raise InvalidSpec(f"unknown timezone {_q(tz)}") from None


# ------------------------------------------------------------------------- rules


def _expr(values: _Values) -> str:
    """Render a field for apscheduler: ``*`` or a comma list."""
    return "*" if values is None else ",".join(map(str, values))


@attrs.frozen
class _Rule:
    """Which wall-clock times match, in apscheduler's numbering (weekday 0 = Monday)."""

    second: _Values
    minute: _Values
    hour: _Values
    day: _Values
    month: _Values
    weekday: _Values
    # True for crontab lines restricting both day fields: either may match.
    day_or: bool
    # cronie's MIN_STAR | HR_STAR: the minute or the hour field starts with '*'.
    # A wildcard job and a fixed-time one differ around DST (module docstring).
    wildcard: bool

    def trigger(self) -> Any:
        """Build the apscheduler trigger matching these wall-clock times (in UTC)."""
        if self.day_or:
            return OrTrigger([self._cron(self.day, None), self._cron(None, self.weekday)])
        return self._cron(self.day, self.weekday)

    def _cron(self, day: _Values, weekday: _Values) -> Any:
        return CronTrigger(
            month=_expr(self.month),
            day=_expr(day),
            day_of_week=_expr(weekday),
            hour=_expr(self.hour),
            minute=_expr(self.minute),
            second=_expr(self.second),
            timezone=UTC,
        )


def _full_to_none(values: set[int], low: int, high: int) -> _Values:
    """Sorted values, or None when they cover the whole field (same matches, simpler trigger)."""
    if len(values) == high - low + 1:
        return None
    return tuple(sorted(values))


def _check_days_possible(day: _Values, month: _Values, spec: str, day_name: str) -> None:
    """Reject day/month combinations that never occur (apscheduler would search to year 9999)."""
    if day is None:
        return
    months = month if month is not None else tuple(range(1, 13))
    if not any(d <= _MAX_DAYS[m] for d in day for m in months):
        raise InvalidSpec(
            f"{day_name} {_expr(day)} never occurs in month {_expr(tuple(months))} in {_q(spec)}"
        )


# ------------------------------------------------------------------- wall times


@attrs.frozen
class _Wall:
    """Where one naive local wall time falls in a timezone."""

    kind: Literal["unique", "gap", "fold"]
    # unique: the instant; fold: the first pass; gap: the transition (end of the gap).
    first: datetime
    # fold: the second pass; otherwise None.
    second: datetime | None
    # gap/fold: the transition instant and the wall time where the gap or repeat ends.
    transition: datetime | None
    region_end: datetime | None
    # gap/fold: how far the wall clock jumps (forward or back); zero otherwise.
    jump: timedelta = timedelta(0)

    def fires(self, wildcard: bool) -> list[datetime]:
        """The real instants this matching wall time fires at (see the module docstring)."""
        if self.kind == "unique":
            return [self.first]
        if self.kind == "gap":
            return [self.first] if self.gap_fires(wildcard) else []
        assert self.second is not None
        return [self.first, self.second] if self.both_passes(wildcard) else [self.first]

    def gap_fires(self, wildcard: bool) -> bool:
        """Whether a matching wall time skipped by this gap fires at its end.

        cronie's main loop (cron.c) sorts the jump by its size in minutes,
        ``timeDiff`` (skipped minutes + 1): up to 5 it runs every job for each
        skipped minute ("small"); up to 180 only the fixed-time jobs ("medium",
        the DST case); beyond, none ("large": virtual time jumps ahead).
        """
        if self.jump <= _SMALL_GAP:
            return True
        if self.jump >= _LARGE_GAP:
            return False
        return not wildcard

    def both_passes(self, wildcard: bool) -> bool:
        """Whether a matching wall time repeated by this fold fires in both passes.

        cronie runs only wildcard jobs while the clock is behind its virtual time
        ("negative", ``timeDiff`` down to -180); a clock set back further
        ("large") resets virtual time and runs every job again.
        """
        return wildcard or self.jump >= _LARGE_FOLD


def _offset(moment: datetime) -> timedelta:
    """utcoffset of an aware datetime (never None for ZoneInfo)."""
    offset = moment.utcoffset()
    assert offset is not None
    return offset


def _offset_at(zone: ZoneInfo, naive_utc: datetime) -> timedelta:
    return _offset(naive_utc.replace(tzinfo=UTC).astimezone(zone))


def _locate(wall: datetime, zone: ZoneInfo) -> _Wall:
    """Classify a naive wall time in ``zone`` and find its real instant(s)."""
    # PEP 495: fold=0 reads a wall time with the offset before a transition,
    # fold=1 with the offset after; they differ only in a gap or a repeat.
    before = _offset(wall.replace(tzinfo=zone, fold=0))
    after = _offset(wall.replace(tzinfo=zone, fold=1))
    if before == after:
        return _Wall("unique", (wall - before).replace(tzinfo=UTC), None, None, None)
    transition = _find_transition(
        zone, wall - max(before, after), wall - min(before, after), before
    )
    region_end = (transition + max(before, after)).replace(tzinfo=None)
    if before > after:
        return _Wall(
            "fold",
            (wall - before).replace(tzinfo=UTC),
            (wall - after).replace(tzinfo=UTC),
            transition,
            region_end,
            before - after,
        )
    return _Wall("gap", transition, None, transition, region_end, after - before)


def _find_transition(zone: ZoneInfo, low: datetime, high: datetime, before: timedelta) -> datetime:
    """First instant in (low, high] (naive UTC) whose offset is no longer ``before``.

    zoneinfo does not expose its transitions, so bisect on whole seconds (tzdata
    transitions fall on whole seconds); a gap or repeat is at most a day wide,
    so this takes at most 17 steps.
    """
    # Whole seconds from a whole second: `low` may carry microseconds from `after`.
    low = low.replace(microsecond=0)
    lo, hi = 0, math.ceil((high - low).total_seconds())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_at(zone, low + timedelta(seconds=mid)) == before:
            lo = mid
        else:
            hi = mid
    return (low + timedelta(seconds=hi)).replace(tzinfo=UTC)


# ----------------------------------------------------------------------- CronSpec


@attrs.frozen
class CronSpec:
    """A parsed schedule spec: its canonical text, its label and its fire times."""

    canonical: str
    """Deterministic normalised text to store; parsing it again gives the same fire times."""
    label: str
    """What reports show: the predefined name for predefined specs, else the canonical text."""
    kind: SpecKind
    """``"seed"``, ``"crontab"`` or ``"predefined"``."""
    _rule: _Rule = attrs.field(repr=False)
    _trigger: Any = attrs.field(init=False, repr=False, eq=False)

    @_trigger.default
    def _build_trigger(self) -> Any:
        return self._rule.trigger()

    def next_fire(self, after: datetime, tz: str | ZoneInfo = "UTC") -> datetime | None:
        """First fire time strictly after ``after`` (an aware datetime), as an aware UTC datetime.

        ``tz`` is the schedule's IANA timezone, in which the spec's wall-clock
        times are read. None means the spec never fires again (only near year
        9999).
        """
        return self._next(_aware_utc(after), resolve_timezone(tz))

    def next_fires(
        self, after: datetime, tz: str | ZoneInfo = "UTC", count: int = 5
    ) -> list[datetime]:
        """The next ``count`` fires strictly after ``after``, ascending, as aware UTC datetimes."""
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        zone = resolve_timezone(tz)
        current = _aware_utc(after)
        fires: list[datetime] = []
        while len(fires) < count:
            fire = self._next(current, zone)
            if fire is None:
                break
            fires.append(fire)
            current = fire
        return fires

    def _match_at_or_after(self, wall: datetime) -> datetime | None:
        """First matching naive wall time at or after ``wall`` (rounded up to a second)."""
        try:
            fire = self._trigger.get_next_fire_time(None, wall.replace(tzinfo=UTC))
        except (OverflowError, ValueError):
            # apscheduler steps past datetime.max near year 9999.
            return None
        if fire is None:
            return None
        assert isinstance(fire, datetime)
        return fire.replace(tzinfo=None)

    def _next(self, after: datetime, zone: ZoneInfo) -> datetime | None:
        """First fire strictly after ``after`` (aware UTC) in ``zone``."""
        wildcard = self._rule.wildcard
        local = after.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0)
        best: datetime | None = None
        if local.fold == 0:
            here = _locate(wall, zone)
            if here.kind == "fold" and here.both_passes(wildcard):
                # `after` is in the first pass of a repeated hour: the second-pass
                # fires of wall times at or before its own wall time are later
                # than it in real time, and the scan below starts at its wall time.
                assert here.transition is not None and here.region_end is not None
                start = self._match_at_or_after(
                    here.transition.astimezone(zone).replace(tzinfo=None)
                )
                if start is not None and start < here.region_end:
                    best = _locate(start, zone).second
        candidate = self._match_at_or_after(wall)
        while candidate is not None:
            where = _locate(candidate, zone)
            fires = where.fires(wildcard)
            if where.kind == "fold" and where.transition is not None and after < where.transition:
                # Before the repeat ends its first pass, only first-pass fires
                # count here: the earliest second-pass fire is `best` (if any).
                fires = fires[:1]
            later = [fire for fire in fires if fire > after]
            if later:
                # Wall order is real order outside repeated hours; inside one,
                # first-pass fires come in wall order before all second-pass ones.
                return later[0] if best is None or later[0] < best else best
            if where.kind == "gap" or (
                where.kind == "fold"
                and not where.both_passes(wildcard)
                and where.transition is not None
                and after >= where.transition
            ):
                # Nothing else in this gap or (past) repeat can fire: jump over it
                # instead of stepping through it second by second.
                assert where.region_end is not None
                candidate = self._match_at_or_after(where.region_end)
            else:
                candidate = self._match_at_or_after(candidate + _ONE_SECOND)
        return best


def _aware_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


# ------------------------------------------------------------------------ parsing


def parse_cron(spec: str, *, rng: random.Random | None = None) -> CronSpec:
    """Parse any supported cron-like spec (see the module docstring).

    ``rng`` draws the random parts (a seed spec's missing second, a predefined
    name's offset); by default a fresh, OS-seeded generator. Raises
    :class:`norc.errors.InvalidSpec` (a ValueError) naming the bad part.
    """
    if not isinstance(spec, str):
        raise InvalidSpec(f"a schedule spec must be a string, got {type(spec).__name__}")
    _check_blanks(spec)
    text = spec.strip(_BLANKS)
    if not text:
        raise InvalidSpec(f"empty schedule spec {_q(spec)}: {_EXPECTED}")
    first = text[0]
    if first == "@":
        return _parse_alias(text, spec)
    if _is_ascii_letter(first):
        named = re.fullmatch(r"([A-Za-z]+)(?:\s+(.*))?", text, re.DOTALL | re.ASCII)
        if named is not None:
            word = named.group(1)
            if word.upper() in PREDEFINED_NAMES:
                return _parse_predefined(word.upper(), named.group(2), spec, rng)
            if named.group(2) is None and word.lower() not in _SEED_KEYS:
                # A bare word that is not a seed key was meant as a name.
                raise InvalidSpec(
                    f"unknown schedule name {_q(word)} (known: {', '.join(PREDEFINED_NAMES)})"
                )
        return _parse_seed(text, spec, rng)
    if _is_number(first) or first in "*-":
        # '-' too, so that '-1 * * * *' is told which field and value are wrong.
        return _parse_crontab(text, spec)
    raise InvalidSpec(f"cannot parse schedule spec {_q(spec)}: {_EXPECTED}")


def next_fire_times(
    spec: str, *, count: int = 5, tz: str = "UTC", after: datetime | None = None
) -> list[datetime]:
    """Parse ``spec`` and list its next ``count`` fires after ``after`` (default: now).

    For ``norc schedule next``: the times are aware datetimes in zone ``tz``, for
    display. A spec with random parts (a predefined name, a seed without
    seconds) gets one fresh draw; pass its canonical form to see a stored one.
    """
    zone = resolve_timezone(tz)
    parsed = parse_cron(spec)
    start = after if after is not None else datetime.now(UTC)
    return [fire.astimezone(zone) for fire in parsed.next_fires(start, zone, count)]


_EXPECTED: Final = (
    "expected a crontab line like '30 2 * * *', an alias like '@daily', a predefined name"
    f" ({', '.join(PREDEFINED_NAMES)}) or a seed encoding like 'o*d*w*h2m30s0'"
)


def _is_number(text: str) -> bool:
    # str.isdigit alone also accepts non-ASCII digits such as '²', which int() rejects.
    return text.isascii() and text.isdigit()


def _small_int(text: str) -> int | None:
    """The value of a string of ASCII digits, or None if it has over 9 significant digits.

    No field takes a value that large, and int() refuses strings of more than
    4300 digits (a ValueError that is not an InvalidSpec).
    """
    significant = text.lstrip("0")
    return int(significant or "0") if len(significant) <= 9 else None


_BLANKS: Final = " \t\n\r\f\v"
"""The characters that separate fields: ASCII whitespace, as cron reads a crontab line."""

_QUOTE_LIMIT: Final = 60


def _q(text: str) -> str:
    """``repr(text)`` for a message, cut short if long so the error stays one readable line."""
    if not isinstance(text, str):
        return f"a {type(text).__name__}"
    if len(text) <= _QUOTE_LIMIT:
        return repr(text)
    return f"{text[:_QUOTE_LIMIT]!r}... ({len(text)} characters)"


def _number_text(text: str) -> str:
    """A number as written, for a message: cut short if it is long."""
    if len(text) <= 20:
        return text
    return f"{text[:12]}... ({len(text)} digits)"


def _char_name(char: str) -> str:
    return f"U+{ord(char):04X} ({unicodedata.name(char, 'unnamed character')})"


def _check_blanks(spec: str) -> None:
    """Refuse whitespace other than ASCII: a no-break or em space looks like a separator."""
    for index, char in enumerate(spec):
        if char.isspace() and char not in _BLANKS:
            raise InvalidSpec(
                f"schedule spec {_q(spec)} has {_char_name(char)} at position {index}:"
                " fields are separated by ASCII whitespace (spaces, tabs) only"
            )


def _is_ascii_letter(char: str) -> bool:
    return len(char) == 1 and "a" <= char.lower() <= "z"


def _draw(rng: random.Random | None) -> random.Random:
    # Created only when needed: most specs draw nothing.
    return rng if rng is not None else random.Random()


# ----------------------------------------------------------------------- crontab


@attrs.frozen
class _CrontabField:
    name: str
    low: int
    high: int
    names: Mapping[str, int] = attrs.field(factory=dict)


_MONTH_NAMES: Final = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
_DAY_NAMES: Final = {
    name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))
}
_SECOND: Final = _CrontabField("second", 0, 59)
_CRONTAB_FIELDS: Final = (
    _CrontabField("minute", 0, 59),
    _CrontabField("hour", 0, 23),
    _CrontabField("day-of-month", 1, 31),
    _CrontabField("month", 1, 12, _MONTH_NAMES),
    # 7 is Sunday too; folded into 0 after parsing.
    _CrontabField("day-of-week", 0, 7, _DAY_NAMES),
)
_ALIASES: Final = {
    "@yearly": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_ALIAS_SYNONYMS: Final = {"@annually": "@yearly", "@midnight": "@daily"}


def _parse_alias(text: str, spec: str) -> CronSpec:
    alias, *rest = _split(text)
    if rest:
        raise _command_error(spec, [alias], rest)
    alias = alias.lower()
    alias = _ALIAS_SYNONYMS.get(alias, alias)
    if alias == "@reboot":
        raise InvalidSpec(f"{_q(spec)} is not a time schedule; Norc has no @reboot")
    if alias not in _ALIASES:
        known = ", ".join([*_ALIASES, *_ALIAS_SYNONYMS])
        raise InvalidSpec(f"unknown alias {_q(text)} in {_q(spec)} (known: {known})")
    rule = _crontab_rule(_ALIASES[alias].split(), spec)
    return CronSpec(canonical=alias, label=alias, kind="crontab", rule=rule)


def _split(text: str) -> list[str]:
    return [field for field in re.split(r"[ \t\n\r\f\v]+", text) if field]


_TIME_TOKEN: Final = r"(?:[0-9]+[A-Za-z]*|[*?]|[A-Za-z]+)"
_TIME_WORD: Final = re.compile(rf"{_TIME_TOKEN}(?:[-/,#]{_TIME_TOKEN})*")
# Letters a time field may hold: names, and other crons' L and W (Quartz '5L',
# 'LW'), which get their own "not a number or name" error.
_TIME_LETTERS: Final = {"L", "W", "LW"}


def _looks_like_command(word: str) -> bool:
    """Whether a word after the fifth field cannot be a time field (``/bin/true``, ``root``)."""
    if not word.isascii() or _TIME_WORD.fullmatch(word) is None:
        return True
    names = {*_MONTH_NAMES, *_DAY_NAMES, *_TIME_LETTERS}
    return any(letters.upper() not in names for letters in re.findall(r"[A-Za-z]+", word))


def _command_error(spec: str, times: list[str], command: list[str]) -> InvalidSpec:
    return InvalidSpec(
        f"a schedule spec has no command: {_q(spec)} reads as a crontab line with the"
        f" command {_q(' '.join(command))}; give only the time fields, like"
        f" {_q(' '.join(times))} (`norc crontab import` is for crontab files)"
    )


def _parse_crontab(text: str, spec: str) -> CronSpec:
    fields = _split(text)
    if len(fields) > 5 and any(_looks_like_command(field) for field in fields[5:]):
        raise _command_error(spec, fields[:5], fields[5:])
    if len(fields) not in (5, 6):
        raise InvalidSpec(
            f"expected 5 crontab fields (minute hour day-of-month month day-of-week)"
            f" or 6 (with a leading second), got {len(fields)} in {_q(spec)}"
        )
    canonical = " ".join(field.upper() for field in fields)
    return CronSpec(
        canonical=canonical, label=canonical, kind="crontab", rule=_crontab_rule(fields, spec)
    )


def _crontab_rule(fields: list[str], spec: str) -> _Rule:
    """Translate 5 or 6 crontab fields into a rule with standard cron meaning."""
    if len(fields) == 5:
        fields = ["0", *fields]
    second, minute, hour, day, month, weekday = (
        _parse_crontab_field(text, field, spec)
        for text, field in zip(fields, (_SECOND, *_CRONTAB_FIELDS), strict=True)
    )
    # Crontab's Sunday is 0 (or 7), apscheduler's Monday is 0.
    weekday = {(value + 6) % 7 for value in weekday}
    # cronie's entry.c sets DOM_STAR/DOW_STAR when a day field's first character
    # is '*' ('*', '*/3', '*/1'); then both day fields must match. Only when
    # neither starts with '*' does a day match if either field does.
    day_text, weekday_text = fields[3], fields[5]
    day_or = not day_text.startswith("*") and not weekday_text.startswith("*")
    rule = _Rule(
        second=_full_to_none(second, 0, 59),
        minute=_full_to_none(minute, 0, 59),
        hour=_full_to_none(hour, 0, 23),
        day=_full_to_none(day, 1, 31),
        month=_full_to_none(month, 1, 12),
        weekday=_full_to_none(weekday, 0, 6),
        day_or=day_or,
        wildcard=fields[1].startswith("*") or fields[2].startswith("*"),
    )
    if not day_or:
        _check_days_possible(rule.day, rule.month, spec, "day-of-month")
    return rule


def _parse_crontab_field(text: str, field: _CrontabField, spec: str) -> set[int]:
    """Expand one crontab field (lists, ranges, steps, names) to its set of values."""
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise InvalidSpec(f"{field.name} {_q(text)} has an empty list item in {_q(spec)}")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _is_number(step_text):
                raise InvalidSpec(
                    f"{field.name} step {_q(step_text)} is not a number in {_q(spec)}"
                )
            value = _small_int(step_text)
            if value is None or not 1 <= value <= field.high:
                raise InvalidSpec(
                    f"{field.name} step {_number_text(step_text)} out of range"
                    f" 1-{field.high} in {_q(spec)}"
                )
            step = value
        if base == "*":
            low, high = field.low, field.high
        elif base.startswith("-") and _is_number(base[1:]):
            raise _out_of_range(base, field, spec)
        elif "-" in base:
            start_text, _, end_text = base.partition("-")
            low = _crontab_value(start_text, field, spec)
            high = _crontab_value(end_text, field, spec)
            if low > high:
                raise InvalidSpec(
                    f"{field.name} range {_q(base)} is inverted ({low} > {high}) in {_q(spec)}"
                )
        elif slash:
            raise InvalidSpec(
                f"{field.name} step {_q(item)} needs a range or '*' before '/' in {_q(spec)}"
            )
        else:
            low = high = _crontab_value(base, field, spec)
        values.update(range(low, high + 1, step))
    if field.name == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return values


def _crontab_value(text: str, field: _CrontabField, spec: str) -> int:
    if _is_number(text):
        value = _small_int(text)
    elif text.isascii() and text.upper() in field.names:
        # ASCII only: the long s (U+017F) upper-cases to 'S', so 'SUN' has a look-alike.
        return field.names[text.upper()]
    elif text.startswith("-") and _is_number(text[1:]):
        # The end of a range such as '1--5'.
        raise _out_of_range(text, field, spec)
    else:
        what = "a number or name" if field.names else "a number"
        raise InvalidSpec(f"{field.name} {_q(text)} is not {what} in {_q(spec)}")
    if value is None or not field.low <= value <= field.high:
        raise _out_of_range(text, field, spec)
    return value


def _out_of_range(text: str, field: _CrontabField, spec: str) -> InvalidSpec:
    """``minute 61 out of range 0-59``: the number as written, cut short if long."""
    return InvalidSpec(
        f"{field.name} {_number_text(text)} out of range {field.low}-{field.high} in {_q(spec)}"
    )


# -------------------------------------------------------------------------- seed


@attrs.frozen
class _SeedField:
    key: str
    name: str
    low: int
    high: int


_SEED_FIELDS: Final = (
    _SeedField("o", "month", 1, 12),
    _SeedField("d", "day", 1, 31),
    _SeedField("w", "weekday", 0, 6),
    _SeedField("h", "hour", 0, 23),
    _SeedField("m", "minute", 0, 59),
    _SeedField("s", "second", 0, 59),
)
_SEED_KEYS: Final = {
    **{key: "o" for key in ("o", "month", "months")},
    **{key: "d" for key in ("d", "day", "days")},
    **{key: "w" for key in ("w", "weekday", "weekdays", "daysofweek")},
    **{key: "h" for key in ("h", "hour", "hours")},
    **{key: "m" for key in ("m", "minute", "minutes")},
    **{key: "s" for key in ("s", "second", "seconds", "sec", "secs")},
}
_SeedValues = dict[str, tuple[int, ...] | None]
"""Seed field values by short key; None means ``*``."""


def _parse_seed_values(text: str, spec: str, rng: random.Random | None) -> _SeedValues:
    """Read a seed encoding into values by key; a missing second is drawn from ``rng``."""
    compact = re.sub(r"[ \t\n\r\f\v]+", "", text).lower()
    values: _SeedValues = {}
    if not _is_ascii_letter(compact[:1]):
        raise InvalidSpec(f"seed spec {_q(spec)} must start with a key like 'h' or 'm'")
    # The text starts with a letter, so these pieces cover all of it.
    for match in re.finditer(r"([a-z]+)([^a-z]*)", compact):
        word, value = match.groups()
        key = _SEED_KEYS.get(word)
        if key is None:
            raise InvalidSpec(
                f"unknown key {_q(word)} in seed spec {_q(spec)}"
                " (keys: o/months, d/days, w/weekdays, h/hours, m/minutes, s/seconds)"
            )
        field = next(field for field in _SEED_FIELDS if field.key == key)
        if key in values:
            raise InvalidSpec(f"{field.name} ({_q(word)}) given twice in seed spec {_q(spec)}")
        values[key] = _seed_value(value, field, word, spec)
    if "s" not in values:
        # One fixed second, not every second: "h2m30" means once, at 02:30:xx.
        values["s"] = (_draw(rng).randrange(60),)
    for field in _SEED_FIELDS:
        values.setdefault(field.key, None)
    return values


def _seed_value(text: str, field: _SeedField, word: str, spec: str) -> tuple[int, ...] | None:
    if text == "*":
        return None
    if not re.fullmatch(r"[0-9]+(,[0-9]+)*", text):
        raise InvalidSpec(
            f"{field.name} ({_q(word)}) value {_q(text)} in seed spec {_q(spec)}"
            " must be '*' or comma-separated numbers"
        )
    numbers = set()
    for number_text in text.split(","):
        number = _small_int(number_text)
        if number is None or not field.low <= number <= field.high:
            raise InvalidSpec(
                f"{field.name} {_number_text(number_text) if number is None else number}"
                f" out of range {field.low}-{field.high} in {_q(spec)}"
            )
        numbers.add(number)
    return tuple(sorted(numbers))


def _seed_canonical(values: _SeedValues) -> str:
    return "".join(f"{field.key}{_expr(values[field.key])}" for field in _SEED_FIELDS)


def _seed_rule(values: _SeedValues, spec: str) -> _Rule:
    """The seed's meaning: every listed field must match, day and weekday included."""

    def normalised(key: str, low: int, high: int) -> _Values:
        field_values = values[key]
        return None if field_values is None else _full_to_none(set(field_values), low, high)

    rule = _Rule(
        second=normalised("s", 0, 59),
        minute=normalised("m", 0, 59),
        hour=normalised("h", 0, 23),
        day=normalised("d", 1, 31),
        month=normalised("o", 1, 12),
        # The seed's weekday 0 is Monday, like apscheduler's.
        weekday=normalised("w", 0, 6),
        day_or=False,
        wildcard=values["h"] is None or values["m"] is None,
    )
    _check_days_possible(rule.day, rule.month, spec, "day")
    return rule


def _parse_seed(text: str, spec: str, rng: random.Random | None) -> CronSpec:
    values = _parse_seed_values(text, spec, rng)
    canonical = _seed_canonical(values)
    return CronSpec(
        canonical=canonical, label=canonical, kind="seed", rule=_seed_rule(values, spec)
    )


# -------------------------------------------------------------------- predefined

# Per name: the fields its offset fixes (one value each, HALFHOURLY's minute two
# values 30 apart) and an example of its canonical form for error messages. The
# other fields must be '*'.
_PREDEFINED_FIXED: Final = {
    "HALFHOURLY": (("m", "s"), "HALFHOURLY o*d*w*h*m12,42s5"),
    "HOURLY": (("m", "s"), "HOURLY o*d*w*h*m12s5"),
    "DAILY": (("h", "m", "s"), "DAILY o*d*w*h13m42s7"),
    "WEEKLY": (("w", "h", "m", "s"), "WEEKLY o*d*w2h13m42s7"),
    "MONTHLY": (("d", "h", "m", "s"), "MONTHLY o*d15w*h13m42s7"),
}


def _draw_predefined(name: str, rng: random.Random) -> _SeedValues:
    """Draw a predefined name's random offset, coarsest field first."""
    values: _SeedValues = {field.key: None for field in _SEED_FIELDS}
    if name == "MONTHLY":
        # Days 29-31 are missing from some months; 1-28 fire every month.
        values["d"] = (rng.randrange(1, 29),)
    if name == "WEEKLY":
        values["w"] = (rng.randrange(7),)
    if name in ("DAILY", "WEEKLY", "MONTHLY"):
        values["h"] = (rng.randrange(24),)
    if name == "HALFHOURLY":
        minute = rng.randrange(30)
        values["m"] = (minute, minute + 30)
    else:
        values["m"] = (rng.randrange(60),)
    values["s"] = (rng.randrange(60),)
    return values


def _fits_predefined(name: str, key: str, got: tuple[int, ...] | None) -> bool:
    """Whether one field of an offset has the shape predefined name ``name`` needs."""
    if key not in _PREDEFINED_FIXED[name][0]:
        return got is None
    if got is None:
        return False
    if name == "HALFHOURLY" and key == "m":
        return len(got) == 2 and got[1] == got[0] + 30
    if name == "MONTHLY" and key == "d":
        return len(got) == 1 and got[0] <= 28
    return len(got) == 1


def _parse_predefined(
    name: str, offset: str | None, spec: str, rng: random.Random | None
) -> CronSpec:
    if offset is None:
        values = _draw_predefined(name, _draw(rng))
    else:
        values = _parse_seed_values(offset, spec, rng)
        fixed, example = _PREDEFINED_FIXED[name]
        if not all(_fits_predefined(name, field.key, values[field.key]) for field in _SEED_FIELDS):
            raise InvalidSpec(
                f"{name} offset in {_q(spec)} does not fit {name}: it must fix only"
                f" {', '.join(fixed)}, like {example!r}"
            )
    return CronSpec(
        canonical=f"{name} {_seed_canonical(values)}",
        label=name,
        kind="predefined",
        rule=_seed_rule(values, spec),
    )
