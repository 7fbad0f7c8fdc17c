"""Crontab fire times checked against cronsim, an independent implementation.

cronsim follows the same cron rules as cronie (Vixie cron, Debian's cron),
which Norc follows: a day field starting with ``*`` makes the day fields AND,
and around DST a job whose minute or hour field starts with ``*`` (a wildcard
job) runs at the wall times that exist, in real time, while a fixed-time job
runs once at the jump over a skipped time and once (in the first pass) at a
repeated one.

Two oracles, both from cronsim:

* ``cronsim_fires``: cronsim's own fire times, DST handling included.
* ``wall_oracle``: cronsim as a pure wall-clock matcher (naive datetimes, so
  no DST handling of its own), with the rules above applied to each matching
  wall time by brute force here. Every comparison checks Norc against it.

cronsim's own DST handling departs from cronie in four places, where the
tests check Norc against ``wall_oracle`` only:

* It treats every 6-field spec as a wildcard job ("6-field expressions are
  not Debian cron compatible anyway"); Norc classes a 6-field spec by its
  minute and hour fields, like the 5-field spec it extends (cronie has no
  seconds field).
* It reads a fixed-time job in naive wall time, so asked from inside the
  second pass of a repeated hour it can answer a wall time of that hour that
  lies *before* the instant it was asked from (in the first pass).
* For a wildcard job whose day starts in a gap (Santiago and Havana move
  their clocks at midnight) it answers the non-existent midnight and goes on
  from there: in America/Santiago on 2025-09-07 (00:00-04:00 jumps to
  01:00-03:00), ``*/15 */2 * * SUN`` gets 00:00-04:00, which cronie does not
  run (the new wall time is 01:00, which that job does not match), and
  ``*/15 * * * SUN`` gets 00:00-04:00 then 01:15, missing the 01:00 that
  cronie runs.
* For wildcard jobs it steps hours in real time from minute 0, which misses
  wall times that exist when a transition is not on a whole hour: on Lord
  Howe (30-minute shift) ``0 */3 * * *`` skips 03:00 after the fall-back, and
  on Chatham (02:45/03:45 transitions) ``* 2 * * *`` skips 02:45-02:59 of the
  second pass. cronie runs wildcard jobs at every minute whose wall time
  matches (cron.c, ``find_jobs`` for each new minute), so Norc fires there.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim, CronSimError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from norc.errors import InvalidSpec
from norc.schedules.cron import parse_cron
from tests.test_cron import crontab_field, field_items, transitions

# DST zones with unusual shapes: Lord Howe shifts by 30 minutes, Chatham at
# 02:45 local, Santiago and Havana at midnight (so whole days start in a gap).
ZONES = (
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
    "America/Havana",
    "Asia/Kolkata",
)
# Zones where cronsim's wildcard jobs depart from cronie near a transition.
CRONSIM_WILDCARD_DEPARTS = (
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
    "America/Havana",
)
DST_ZONES = tuple(zone for zone in ZONES if zone not in ("UTC", "Asia/Kolkata"))


def star_field(low: int, high: int, names: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """A crontab field that may also start with '*' without being '*' (``*/3``, ``*/1,5``)."""
    starred = st.tuples(
        st.integers(1, high), st.lists(field_items(low, high, names), max_size=2)
    ).map(lambda t: ",".join([f"*/{t[0]}", *t[1]]))
    return st.one_of(crontab_field(low, high, names), starred)


MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

specs = st.tuples(
    st.one_of(st.none(), star_field(0, 59)),
    star_field(0, 59),
    star_field(0, 23),
    star_field(1, 31),
    crontab_field(1, 12, MONTHS),
    star_field(0, 7, DAYS),
).map(lambda fields: " ".join(field for field in fields if field is not None))

instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


def cronsim_iter(spec: str, after: datetime, zone: ZoneInfo) -> Iterator[datetime]:
    """cronsim's fires after ``after``, as UTC datetimes."""
    for fire in CronSim(spec, after.astimezone(zone)):
        yield fire.astimezone(UTC)


def cronsim_fires(spec: str, after: datetime, zone: ZoneInfo, count: int) -> list[datetime]:
    """cronsim's next ``count`` fires after ``after``, as UTC datetimes."""
    return list(itertools.islice(cronsim_iter(spec, after, zone), count))


def wall_oracle(spec: str, zone: ZoneInfo, after: datetime, end: datetime) -> list[datetime]:
    """Fires in (after, end] from cronsim's wall-clock matches and cronie's DST rules.

    Each matching naive wall time fires at the instant(s) it names: once if it
    exists once; if repeated, in the first pass, and in the second too for a
    wildcard job; if skipped by a jump forward, at the jump (the first instant
    after it) for a fixed-time job only. The jumps of these zones in these
    years are 30 or 60 minutes, cronie's "medium" and "negative" cases.
    """
    wildcard = is_wildcard(spec)
    start = (after.astimezone(zone) - timedelta(hours=3)).replace(tzinfo=None)
    stop = (end.astimezone(zone) + timedelta(hours=3)).replace(tzinfo=None)
    out = set()
    for wall in CronSim(spec, start):
        if wall > stop:
            break
        first = wall.replace(tzinfo=zone, fold=0)
        second = wall.replace(tzinfo=zone, fold=1)
        if first.utcoffset() == second.utcoffset():
            fires = [first]
        elif first.utcoffset() > second.utcoffset():  # type: ignore[operator]
            fires = [first, second] if wildcard else [first]
        else:
            fires = [] if wildcard else [jump_after(wall, zone)]
        out.update(fire.astimezone(UTC) for fire in fires)
    return sorted(fire for fire in out if after < fire <= end)


def jump_after(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant the clock jumps over the skipped naive ``wall`` (found minute by minute)."""
    moment = wall.replace(tzinfo=zone, fold=1).astimezone(UTC).replace(second=0)
    while (moment.astimezone(zone).replace(tzinfo=None)) > wall:
        moment -= timedelta(minutes=1)
    while (moment.astimezone(zone).replace(tzinfo=None)) < wall:
        moment += timedelta(minutes=1)
    return moment


def cronsim_departs(spec: str, zone: ZoneInfo, after: datetime, end: datetime) -> bool:
    """Whether this is one of the cases where cronsim departs from cronie (module docstring)."""
    if not near_transition(zone, after, end):
        return False
    if is_wildcard(spec):
        return zone.key in CRONSIM_WILDCARD_DEPARTS
    return len(spec.split()) == 6 or in_second_pass(after, zone)


def is_wildcard(spec: str) -> bool:
    """cronie's MIN_STAR | HR_STAR: the minute or the hour field starts with '*'."""
    minute, hour = spec.split()[-5:][:2]
    return minute.startswith("*") or hour.startswith("*")


def near_transition(zone: ZoneInfo, start: datetime, end: datetime) -> bool:
    """Whether ``zone``'s UTC offset changes between ``start - 1 day`` and ``end + 1 day``."""
    moment = start - timedelta(days=1)
    offset = moment.astimezone(zone).utcoffset()
    while moment < end + timedelta(days=1):
        moment += timedelta(hours=1)
        if moment.astimezone(zone).utcoffset() != offset:
            return True
    return False


def in_second_pass(moment: datetime, zone: ZoneInfo) -> bool:
    """Whether ``moment`` is in the second pass of a repeated wall time in ``zone``."""
    return moment.astimezone(zone).fold == 1


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(spec=specs, after=instants, tz=st.sampled_from(ZONES))
def test_crontab_agrees_with_cronsim(spec: str, after: datetime, tz: str) -> None:
    """Any crontab's next fires equal cronsim's, day-field star rule and DST included."""
    try:
        parsed = parse_cron(spec)
    except InvalidSpec:
        # Only day/month combinations that never occur are rejected (31 FEB);
        # cronsim refuses those too.
        try:
            CronSim(spec, after)
        except CronSimError:
            assume(False)
        raise
    zone = ZoneInfo(tz)
    ours = parsed.next_fires(after, zone, 3)
    assert len(ours) == 3
    assert ours == wall_oracle(spec, zone, after, ours[-1]), (spec, after.astimezone(zone))
    if not cronsim_departs(spec, zone, after, ours[-1]):
        assert ours == cronsim_fires(spec, after, zone, 3), (spec, after.astimezone(zone))


dst_seconds = st.sampled_from([None, "0", "30", "*/20"])
dst_minutes = st.sampled_from(
    ["*/15", "0", "30", "45", "*/7", "5-20/5", "0,30", "59", "*", "0-59", "*/30", "15,45"]
)
dst_hours = st.sampled_from(
    ["*", "*/2", "*/3", "0", "1", "2", "3", "23", "0-3", "1,2", "0-4/2", "22-23", "*/5", "*,2"]
)
dst_days = st.sampled_from(["* * *", "* * */1", "*/1 * 0-6", "1-31 * 0-6", "* * SUN"])
dst_specs = st.tuples(dst_seconds, dst_minutes, dst_hours, dst_days).map(
    lambda t: " ".join(part for part in t if part is not None)
)


@settings(max_examples=300, deadline=None)
@given(
    spec=dst_specs,
    tz=st.sampled_from(DST_ZONES),
    year=st.sampled_from([2025, 2026]),
    which=st.integers(0, 1),
    shift=st.integers(-26 * 60, 60),
)
def test_dst_transitions_agree_with_cronsim(
    spec: str, tz: str, year: int, which: int, shift: int
) -> None:
    """Across real DST transitions, every fire for a day equals cronsim's.

    The start is anywhere from 26 hours before a transition to an hour after
    it (minutes apart), and the fires are compared for the next 30 hours.
    """
    zone = ZoneInfo(tz)
    after = transitions(zone, year)[which] + timedelta(minutes=shift)
    end = after + timedelta(hours=30)
    parsed = parse_cron(spec)
    ours = []
    fire = parsed.next_fire(after, zone)
    while fire is not None and fire <= end:
        ours.append(fire)
        fire = parsed.next_fire(fire, zone)
    assert ours == wall_oracle(spec, zone, after, end), (spec, tz, after.astimezone(zone))
    if not cronsim_departs(spec, zone, after, end):
        theirs = list(itertools.takewhile(lambda f: f <= end, cronsim_iter(spec, after, zone)))
        assert ours == theirs, (spec, tz, after.astimezone(zone))


@pytest.mark.parametrize(
    ("spec", "tz", "after"),
    [
        ("*/15 2 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, tzinfo=UTC)),
        ("*/15 2 * * *", "Europe/Berlin", datetime(2026, 10, 24, 12, tzinfo=UTC)),
        ("30 2 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, tzinfo=UTC)),
        ("30 2 * * *", "Europe/Berlin", datetime(2026, 10, 24, 12, tzinfo=UTC)),
        ("0,30 2,3 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, tzinfo=UTC)),
        ("15 2 * * *", "Australia/Lord_Howe", datetime(2026, 10, 3, tzinfo=UTC)),
        ("*/15 1 * * *", "Australia/Lord_Howe", datetime(2026, 4, 4, tzinfo=UTC)),
        ("0 0 */1 * 1", "UTC", datetime(2026, 1, 1, tzinfo=UTC)),
        ("0 0 13 * */2", "UTC", datetime(2026, 1, 1, tzinfo=UTC)),
        ("0 0 13 * 5", "UTC", datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_issue_examples_agree_with_cronsim(spec: str, tz: str, after: datetime) -> None:
    """The issue's cases (and their neighbours) give cronsim's first nine fires."""
    zone = ZoneInfo(tz)
    assert parse_cron(spec).next_fires(after, zone, 9) == cronsim_fires(spec, after, zone, 9)


def walls(spec: str, tz: str, after: datetime, count: int) -> list[str]:
    """Norc's next ``count`` fires as local wall times with their offsets."""
    zone = ZoneInfo(tz)
    return [
        f.astimezone(zone).strftime("%m-%d %H:%M%z") for f in fires_of(spec, after, zone, count)
    ]


def fires_of(spec: str, after: datetime, zone: ZoneInfo, count: int) -> list[datetime]:
    return parse_cron(spec).next_fires(after, zone, count)


def test_where_cronsim_departs_norc_follows_cronie() -> None:
    """The module docstring's examples of cronsim departing from cronie, as Norc fires them."""
    # A 6-field fixed-time spec is a fixed-time job: once, at the jump.
    berlin = datetime(2026, 3, 28, 12, tzinfo=UTC)
    assert walls("0 30 2 * * *", "Europe/Berlin", berlin, 2) == [
        "03-29 03:00+0200",
        "03-30 02:30+0200",
    ]
    # Asked from the second pass of 02:xx, a fixed-time 02:30 is next due the next day.
    second_pass = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)  # 02:15+01:00
    assert walls("30 2 * * *", "Europe/Berlin", second_pass, 1) == ["10-26 02:30+0100"]
    # Santiago's day starts at 01:00 on 2025-09-07: no 00:00, but 01:00 fires.
    santiago = datetime(2025, 9, 7, 3, 59, tzinfo=UTC)  # 23:59-04:00 the day before
    assert walls("*/15 */2 * * SUN", "America/Santiago", santiago, 1) == ["09-07 02:00-0300"]
    assert walls("*/15 * * * SUN", "America/Santiago", santiago, 2) == [
        "09-07 01:00-0300",
        "09-07 01:15-0300",
    ]
    # Lord Howe's 30-minute fall-back: 03:00 exists once and fires.
    lord_howe = datetime(2026, 4, 4, 14, tzinfo=UTC)  # 01:00+11:00
    assert walls("0 */3 * * *", "Australia/Lord_Howe", lord_howe, 1) == ["04-05 03:00+1030"]
    # Chatham falls back from 03:45+13:45 to 02:45+12:45: 02:45-02:59 come again.
    chatham = datetime(2026, 4, 4, 13, 0, tzinfo=UTC)  # 02:45+13:45
    assert walls("* 2 * * *", "Pacific/Chatham", chatham, 16)[-2:] == [
        "04-05 02:45+1245",
        "04-05 02:46+1245",
    ]
