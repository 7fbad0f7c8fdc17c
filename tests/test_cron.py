"""Tests for norc.schedules.cron: parsing specs and computing their fire times."""

from __future__ import annotations

import itertools
import random
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from norc.errors import InvalidSpec
from norc.schedules.cron import CronSpec, next_fire_times, parse_cron

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata")
# Lord Howe Island shifts by 30 minutes, so gaps and repeats are not whole hours.
DST_ZONES = ("Europe/Berlin", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe")
BERLIN = ZoneInfo("Europe/Berlin")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """An aware UTC datetime."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(
    zone: str, year: int, month: int, day: int, hour: int, minute: int, *, fold: int = 0
) -> datetime:
    """An aware datetime in ``zone``."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone), fold=fold)


def fires(spec: str | CronSpec, after: datetime, count: int, tz: str = "UTC") -> list[datetime]:
    """The next ``count`` fires of ``spec``, as UTC datetimes."""
    parsed = parse_cron(spec) if isinstance(spec, str) else spec
    return parsed.next_fires(after, tz, count)


class NoRandom(random.Random):
    """A generator that fails the test if anything draws from it."""

    def random(self) -> float:
        raise AssertionError("parsing a canonical spec must not draw random numbers")

    def getrandbits(self, k: int) -> int:
        raise AssertionError("parsing a canonical spec must not draw random numbers")


def transitions(zone: ZoneInfo, year: int) -> list[datetime]:
    """The instants (UTC) in ``year`` where ``zone``'s UTC offset changes, to the minute."""
    found = []
    moment = utc(year, 1, 1)
    offset = moment.astimezone(zone).utcoffset()
    while moment.year == year:
        following = moment + timedelta(hours=1)
        if following.astimezone(zone).utcoffset() != offset:
            minute = moment
            while minute.astimezone(zone).utcoffset() == offset:
                minute += timedelta(minutes=1)
            found.append(minute)
            offset = following.astimezone(zone).utcoffset()
        moment = following
    return found


def offset_changes(zone: ZoneInfo, start: datetime, end: datetime) -> bool:
    """Whether ``zone``'s UTC offset changes between ``start`` and ``end`` (checked daily)."""
    offset = start.astimezone(zone).utcoffset()
    moment = start
    while moment < end:
        moment = min(moment + timedelta(hours=12), end)
        if moment.astimezone(zone).utcoffset() != offset:
            return True
    return False


# ------------------------------------------------------------------ crontab strategies


def field_items(low: int, high: int, names: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """One comma-list item of a crontab field: *, a value, a range or a step."""
    value = st.integers(low, high)

    def word(number: int) -> st.SearchStrategy[str]:
        options = [st.just(str(number))]
        if names and number - low < len(names):
            name = names[number - low]
            options.append(st.sampled_from([name, name.lower()]))
        return st.one_of(options)

    single = value.flatmap(word)
    # croniter 7 reads a one-value range like "2-2" as "*", so ranges here have
    # two distinct ends (one-value ranges are checked in an explicit test).
    pairs = st.lists(value, min_size=2, max_size=2, unique=True).map(sorted)
    ranges = pairs.flatmap(lambda pair: st.tuples(word(pair[0]), word(pair[1])).map("-".join))
    steps = st.integers(1, high).map(lambda step: f"*/{step}")
    range_steps = st.tuples(pairs, st.integers(1, high)).map(
        lambda t: f"{t[0][0]}-{t[0][1]}/{t[1]}"
    )
    return st.one_of(single, ranges, steps, range_steps)


def crontab_field(low: int, high: int, names: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """A whole crontab field: ``*`` or a comma list of 1-3 items."""
    items = st.lists(field_items(low, high, names), min_size=1, max_size=3).map(",".join)
    return st.one_of(st.just("*"), items)


MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

crontab_specs = st.tuples(
    st.one_of(st.none(), crontab_field(0, 59)),
    crontab_field(0, 59),
    crontab_field(0, 23),
    crontab_field(1, 31),
    crontab_field(1, 12, MONTHS),
    crontab_field(0, 7, DAYS),
).map(lambda fields: " ".join(field for field in fields if field is not None))

instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


def croniter_next(spec: str, after: datetime, zone: ZoneInfo) -> datetime:
    """croniter's next fire of a 5- or 6-field (seconds first) crontab, in UTC."""
    six = len(spec.split()) == 6
    it = croniter(spec, after.astimezone(zone), second_at_beginning=six)
    fire = it.get_next(datetime)
    assert isinstance(fire, datetime)
    return fire.astimezone(UTC)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(spec=crontab_specs, after=instants, tz=st.sampled_from(ZONES))
def test_crontab_agrees_with_croniter(spec: str, after: datetime, tz: str) -> None:
    """Away from DST transitions, crontab next-fire times equal croniter's in every zone."""
    try:
        parsed = parse_cron(spec)
    except InvalidSpec:
        # Only day/month combinations that never occur are rejected, like 31 FEB.
        assume(False)
        raise
    fields = spec.split()[-5:]
    # croniter's fields: minute hour day month weekday [second].
    expanded = croniter(spec, second_at_beginning=len(spec.split()) == 6).expanded
    # croniter counts a day field listing every day (like 0-6) as '*', and ORs
    # the day fields even when one starts with '*' ('*/2'); Norc follows cronie:
    # a field starting with '*' is unrestricted for the OR rule, anything else is
    # restricted (tested explicitly below, and against cronsim in test_cron_cronsim).
    for text, values in ((fields[2], expanded[2]), (fields[4], expanded[4])):
        assume(text == "*" or (not text.startswith("*") and values != ["*"]))
    zone = ZoneInfo(tz)
    ours = parsed.next_fire(after, tz)
    assert ours is not None
    theirs = croniter_next(spec, after, zone)
    # croniter fires a specific-hour job in both passes of a repeated hour, where
    # this module fires once (Vixie); those cases are tested explicitly below.
    if offset_changes(zone, after - timedelta(hours=3), max(ours, theirs)):
        return
    assert ours == theirs, (spec, after.astimezone(zone), ours.astimezone(zone))


# ------------------------------------------------- DST: an independent instant-based oracle


def oracle_fires(spec: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Fires of a 5-field crontab in (start, end], found by walking real minutes.

    Wall times are matched by croniter; the DST rules of the module docstring
    are applied per real instant: a wall time that exists once fires; one that
    exists twice fires in the first pass, and also in the second for a wildcard
    job (minute or hour field starting with '*'); the instant ending a gap fires
    once if a skipped wall time matched and the job is a fixed-time one. (The
    2026 transitions of DST_ZONES are 30 or 60 minutes, cronie's "medium" and
    "negative" cases.)
    """
    minute, hour = spec.split()[:2]
    wildcard = minute.startswith("*") or hour.startswith("*")
    step = timedelta(minutes=1)
    out = []
    moment = start.replace(second=0, microsecond=0) + step
    while moment <= end:
        here = moment.astimezone(zone)
        wall = here.replace(tzinfo=None)
        early = wall.replace(tzinfo=zone, fold=0).utcoffset()
        late = wall.replace(tzinfo=zone, fold=1).utcoffset()
        repeated = early != late
        fire = croniter.match(spec, wall) and (not repeated or here.fold == 0 or wildcard)
        previous_wall = (moment - step).astimezone(zone).replace(tzinfo=None)
        if not fire and not wildcard and wall - previous_wall > step:
            # The clock jumped forward: walls in (previous, wall) never happened.
            skipped = previous_wall + step
            while skipped < wall:
                if croniter.match(spec, skipped):
                    fire = True
                    break
                skipped += step
        if fire:
            out.append(moment)
        moment += step
    return out


dst_minutes = st.sampled_from(["*/15", "0", "30", "*/7", "5-20/5", "0,30", "59", "*", "0-59"])
dst_hours = st.sampled_from(["*", "*/2", "*/3", "1", "2", "3", "1-3", "2,3", "0-4/2", "*/5"])
dst_specs = st.tuples(dst_minutes, dst_hours).map(lambda t: f"{t[0]} {t[1]} * * *")


@settings(max_examples=60, deadline=None)
@given(
    spec=dst_specs,
    tz=st.sampled_from(DST_ZONES),
    which=st.integers(0, 1),
    shift=st.integers(-6 * 60, 2 * 60),
)
def test_dst_transitions_follow_cronie_rules(spec: str, tz: str, which: int, shift: int) -> None:
    """Around 2026's DST transitions, fires equal an independent minute-by-minute oracle."""
    zone = ZoneInfo(tz)
    transition = transitions(zone, 2026)[which]
    after = transition + timedelta(minutes=shift)
    end = after + timedelta(hours=8)
    ours = []
    parsed = parse_cron(spec)
    fire = parsed.next_fire(after, tz)
    while fire is not None and fire <= end:
        ours.append(fire)
        fire = parsed.next_fire(fire, tz)
    assert ours == oracle_fires(spec, zone, after, end)


@settings(max_examples=60, deadline=None)
@given(spec=crontab_specs, tz=st.sampled_from(DST_ZONES), which=st.integers(0, 1))
def test_iteration_is_strictly_increasing_and_complete(spec: str, tz: str, which: int) -> None:
    """Iterating next_fire across a DST transition never repeats an instant or skips a fire."""
    try:
        parsed = parse_cron(spec)
    except InvalidSpec:
        assume(False)
        raise
    start = transitions(ZoneInfo(tz), 2026)[which] - timedelta(hours=2)
    got = parsed.next_fires(start, tz, 25)
    assert got == sorted(set(got))
    for earlier, fire in zip([start, *got], got, strict=False):
        assert fire > earlier
        # Asking just before a fire finds that fire, so nothing lies between.
        assert parsed.next_fire(fire - timedelta(microseconds=1), tz) == fire
        assert parsed.next_fire(earlier, tz) == fire


# --------------------------------------------------------------- DST: Berlin examples


def test_spring_forward_specific_hour_fires_at_end_of_gap() -> None:
    """A daily 02:30 fires once on Berlin's spring-forward day, at 03:00 local (01:00 UTC)."""
    got = fires("30 2 * * *", utc(2026, 3, 28, 12), 2, "Europe/Berlin")
    assert got == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
    assert got[0].astimezone(BERLIN) == local("Europe/Berlin", 2026, 3, 29, 3, 0)


def test_fall_back_specific_hour_fires_once_in_first_pass() -> None:
    """A daily 02:30 fires once on Berlin's fall-back day, at 02:30+02:00 (00:30 UTC)."""
    got = fires("30 2 * * *", utc(2026, 10, 24, 12), 2, "Europe/Berlin")
    assert got == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert got[0].astimezone(BERLIN).utcoffset() == timedelta(hours=2)


def test_fall_back_from_inside_the_first_pass_skips_the_second() -> None:
    """Asked from within the first pass, a specific-hour job's next fire is the next day."""
    got = parse_cron("0 2 * * *").next_fire(utc(2026, 10, 25, 0, 45), "Europe/Berlin")
    assert got == utc(2026, 10, 26, 1, 0)


def test_fall_back_wildcard_hour_fires_in_both_passes() -> None:
    """A half-hourly job fires at every real half hour through Berlin's repeated hour."""
    got = fires("*/30 * * * *", utc(2026, 10, 24, 23, 0), 6, "Europe/Berlin")
    assert got == [utc(2026, 10, 24, 23, 30) + timedelta(minutes=30 * i) for i in range(6)]
    walls = [fire.astimezone(BERLIN).strftime("%H:%M%z") for fire in got]
    assert walls == [
        "01:30+0200",
        "02:00+0200",
        "02:30+0200",
        "02:00+0100",
        "02:30+0100",
        "03:00+0100",
    ]


def test_fall_back_wildcard_from_inside_the_first_pass() -> None:
    """From 02:45 in the first pass, a quarter-hourly job next fires at 02:00 of the second."""
    got = fires("*/15 * * * *", utc(2026, 10, 25, 0, 45), 2, "Europe/Berlin")
    assert got == [utc(2026, 10, 25, 1, 0), utc(2026, 10, 25, 1, 15)]
    assert got[0].astimezone(BERLIN) == local("Europe/Berlin", 2026, 10, 25, 2, 0, fold=1)


def test_second_pass_fire_found_from_just_before_it() -> None:
    """Asked a microsecond before 02:00 of the second pass, an hourly job finds that fire."""
    hourly = parse_cron("0 * * * *")
    second_pass = utc(2026, 10, 25, 1, 0)
    assert hourly.next_fire(second_pass - timedelta(microseconds=1), "Europe/Berlin") == second_pass


def test_spring_forward_wildcard_hour_skips_the_gap() -> None:
    """A half-hourly job fires 01:30 then 03:00 local on spring-forward day: nothing doubled."""
    got = fires("*/30 * * * *", utc(2026, 3, 29, 0, 0), 3, "Europe/Berlin")
    assert got == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30)]


def test_spring_forward_collapses_skipped_fires_into_one() -> None:
    """02:00, 02:30 and 03:00 local fire once together at the end of the gap."""
    got = fires("0,30 2,3 * * *", utc(2026, 3, 28, 23, 0), 3, "Europe/Berlin")
    assert got == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 0)]


def test_wildcard_minute_skips_the_gap_and_repeats_the_fold() -> None:
    """`*/15 2 * * *` is a wildcard job (its minute starts with '*'), as in cronie.

    On Berlin's spring-forward day it does not fire at all (02:xx never
    happens); on the fall-back day it fires 8 times, 02:00-02:45 in each pass.
    """
    spring = fires("*/15 2 * * *", utc(2026, 3, 28, 12), 1, "Europe/Berlin")
    assert spring == [local("Europe/Berlin", 2026, 3, 30, 2, 0)]
    autumn = fires("*/15 2 * * *", utc(2026, 10, 24, 12), 9, "Europe/Berlin")
    walls = [fire.astimezone(BERLIN).strftime("%d %H:%M%z") for fire in autumn]
    assert walls == [
        *(f"25 02:{minute:02}+0200" for minute in (0, 15, 30, 45)),
        *(f"25 02:{minute:02}+0100" for minute in (0, 15, 30, 45)),
        "26 02:00+0100",
    ]


@pytest.mark.parametrize("spec", ["0-59/15 2 * * *", "0,15,30,45 2 * * *"])
def test_minute_list_without_star_is_a_fixed_time_job(spec: str) -> None:
    """The same minutes written without a leading '*' make a fixed-time job.

    cronie sets MIN_STAR only when the field's first character is '*': this
    job runs once at the jump on the spring-forward day and only in the first
    pass on the fall-back day.
    """
    spring = fires(spec, utc(2026, 3, 28, 12), 2, "Europe/Berlin")
    assert spring == [utc(2026, 3, 29, 1, 0), local("Europe/Berlin", 2026, 3, 30, 2, 0)]
    autumn = fires(spec, utc(2026, 10, 24, 12), 5, "Europe/Berlin")
    assert autumn == [utc(2026, 10, 25, 0, 15 * i) for i in range(4)] + [
        local("Europe/Berlin", 2026, 10, 26, 2, 0)
    ]


def test_lord_howe_half_hour_shift() -> None:
    """Lord Howe moves its clocks by 30 minutes: 02:00-02:30 is skipped, 01:30-02:00 repeated.

    A fixed-time 02:15 runs once at the jump (02:30 local); a wildcard
    `*/15 2 * * *` skips 02:00 and 02:15 and fires from 02:30; on the fall-back
    day a fixed 01:45 fires once, the wildcard `*/15 1 * * *` twice at 01:30
    and 01:45.
    """
    zone = "Australia/Lord_Howe"
    lhi = ZoneInfo(zone)
    # 2026-10-04 02:00 +10:30 -> 02:30 +11:00; 2026-04-05 02:00 +11:00 -> 01:30 +10:30.
    assert fires("15 2 * * *", utc(2026, 10, 3), 1, zone) == [local(zone, 2026, 10, 4, 2, 30)]
    wild = fires("*/15 2 * * *", utc(2026, 10, 3), 3, zone)
    assert [fire.astimezone(lhi).strftime("%d %H:%M") for fire in wild] == [
        "04 02:30",
        "04 02:45",
        "05 02:00",
    ]
    # (An aware datetime inside a repeat never equals one in another zone, PEP 495.)
    fixed = fires("45 1 * * *", utc(2026, 4, 4), 2, zone)
    assert [fire.astimezone(lhi).strftime("%d %H:%M%z") for fire in fixed] == [
        "05 01:45+1100",
        "06 01:45+1030",
    ]
    repeated = fires("*/15 1 * * *", utc(2026, 4, 4), 6, zone)
    assert [fire.astimezone(lhi).strftime("%d %H:%M%z") for fire in repeated] == [
        "05 01:00+1100",
        "05 01:15+1100",
        "05 01:30+1100",
        "05 01:45+1100",
        "05 01:30+1030",
        "05 01:45+1030",
    ]


def test_large_gap_runs_nothing_skipped() -> None:
    """A jump of 3 hours or more is cronie's "large" case: skipped wall times never fire.

    Samoa skipped 2011-12-30 (a 24-hour jump): a fixed-time noon job does
    not run that day at all, unlike a DST gap.
    """
    got = fires("0 12 * * *", utc(2011, 12, 29), 2, "Pacific/Apia")
    apia = ZoneInfo("Pacific/Apia")
    assert [fire.astimezone(apia).strftime("%Y-%m-%d %H:%M") for fire in got] == [
        "2011-12-29 12:00",
        "2011-12-31 12:00",
    ]


def test_seed_and_predefined_follow_the_same_dst_rules() -> None:
    """A seed spec for 02:30 and a pinned DAILY behave like the crontab on both DST days."""
    for spec in ("h2m30s0", "DAILY o*d*w*h2m30s0"):
        assert fires(spec, utc(2026, 3, 28, 12), 1, "Europe/Berlin") == [utc(2026, 3, 29, 1)]
        got = fires(spec, utc(2026, 10, 24, 12), 2, "Europe/Berlin")
        assert got == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


# ----------------------------------------------------------------- crontab examples


@pytest.mark.parametrize("dow", ["0", "7", "SUN", "sun"])
def test_sunday_is_0_7_and_sun(dow: str) -> None:
    """Day-of-week 0, 7 and SUN all mean Sunday (2026-01-04 is a Sunday)."""
    got = fires(f"0 0 * * {dow}", utc(2026, 1, 1), 2)
    assert got == [utc(2026, 1, 4), utc(2026, 1, 11)]


def test_day_of_month_or_day_of_week() -> None:
    """With both day fields restricted, a day matches if either does."""
    got = fires("0 0 1 * MON", utc(2026, 1, 1), 6)
    days = [fire.day for fire in got]
    assert days == [5, 12, 19, 26, 1, 2]
    assert [fire.month for fire in got] == [1, 1, 1, 1, 2, 2]


def test_a_day_field_listing_every_day_without_star_is_restricted() -> None:
    """A day-of-week listing all days (0-6) still restricts it, so the OR makes every day match."""
    got = fires("0 0 13 * 0-6", utc(2026, 1, 1), 3)
    assert got == [utc(2026, 1, 2), utc(2026, 1, 3), utc(2026, 1, 4)]


def test_a_day_field_starting_with_star_means_and() -> None:
    """`*/1` or `*/3` in a day field counts as `*` for the OR rule (cronie's DOM_STAR).

    `0 0 */1 * 1` fires on Mondays only, `0 0 */3 * 1` on Mondays that are
    days 1, 4, 7, ... of the month, and `0 0 13 * */2` on the 13th when it is
    a Sunday, Tuesday, Thursday or Saturday.
    """
    mondays = fires("0 0 */1 * 1", utc(2026, 1, 1), 4)
    assert mondays == [utc(2026, 1, 5), utc(2026, 1, 12), utc(2026, 1, 19), utc(2026, 1, 26)]
    assert fires("0 0 */1 * MON", utc(2026, 1, 1), 4) == mondays
    every_third = fires("0 0 */3 * 1", utc(2026, 1, 1), 4)
    assert every_third == [utc(2026, 1, 19), utc(2026, 2, 16), utc(2026, 3, 16), utc(2026, 4, 13)]
    thirteenths = fires("0 0 13 * */2", utc(2026, 1, 1), 3)
    assert [fire.month for fire in thirteenths] == [1, 6, 8]  # a Tue, a Sat, a Thu
    assert {fire.day for fire in thirteenths} == {13}


def test_one_day_field_restricted_uses_just_that_field() -> None:
    """With day-of-week '*', only the day of month counts (and vice versa)."""
    assert fires("0 0 13 * *", utc(2026, 1, 1), 2) == [utc(2026, 1, 13), utc(2026, 2, 13)]
    assert fires("0 0 * * FRI", utc(2026, 1, 1), 2) == [utc(2026, 1, 2), utc(2026, 1, 9)]


def test_mon_fri_range() -> None:
    """MON-FRI fires on weekdays only."""
    got = fires("0 9 * * MON-FRI", utc(2026, 1, 2, 10), 6)
    assert [fire.day for fire in got] == [5, 6, 7, 8, 9, 12]
    assert fires("0 9 * * mon-fri", utc(2026, 1, 2, 10), 6) == got


def test_one_value_range() -> None:
    """A range with equal ends, like 2-2, means just that value."""
    assert fires("0 0 2-2 * *", utc(2026, 1, 1), 2) == [utc(2026, 1, 2), utc(2026, 2, 2)]


def test_month_names() -> None:
    """Month names are case-insensitive and mix with numbers."""
    got = fires("0 0 1 JAN,jul *", utc(2026, 1, 1), 3)
    assert got == [utc(2026, 7, 1), utc(2027, 1, 1), utc(2027, 7, 1)]
    assert parse_cron("0 0 1 jan,Jul *").canonical == "0 0 1 JAN,JUL *"


def test_steps_and_range_steps() -> None:
    """*/15 and 10-50/20 pick every 15th minute and minutes 10, 30, 50."""
    quarter = fires("*/15 * * * *", utc(2026, 1, 1), 5)
    assert [fire.minute for fire in quarter] == [15, 30, 45, 0, 15]
    assert [fire.minute for fire in fires("10-50/20 * * * *", utc(2026, 1, 1), 4)] == [
        10,
        30,
        50,
        10,
    ]


@pytest.mark.parametrize(
    ("alias", "canonical", "expected"),
    [
        ("@yearly", "@yearly", [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("@annually", "@yearly", [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("@monthly", "@monthly", [utc(2026, 2, 1), utc(2026, 3, 1)]),
        ("@weekly", "@weekly", [utc(2026, 1, 4), utc(2026, 1, 11)]),
        ("@daily", "@daily", [utc(2026, 1, 2), utc(2026, 1, 3)]),
        ("@MIDNIGHT", "@daily", [utc(2026, 1, 2), utc(2026, 1, 3)]),
        ("@hourly", "@hourly", [utc(2026, 1, 1, 1), utc(2026, 1, 1, 2)]),
    ],
)
def test_aliases(alias: str, canonical: str, expected: list[datetime]) -> None:
    """Each @alias fires like its crontab expansion and keeps its normalised name."""
    parsed = parse_cron(alias)
    assert (parsed.canonical, parsed.label, parsed.kind) == (canonical, canonical, "crontab")
    assert fires(parsed, utc(2026, 1, 1), 2) == expected


def test_six_fields_lead_with_seconds() -> None:
    """A 6-field crontab's first field is the second."""
    got = fires("*/20 * * * * *", utc(2026, 1, 1), 4)
    assert got == [
        utc(2026, 1, 1, 0, 0, 20),
        utc(2026, 1, 1, 0, 0, 40),
        utc(2026, 1, 1, 0, 1),
        utc(2026, 1, 1, 0, 1, 20),
    ]
    assert fires("30 0 12 * * *", utc(2026, 1, 1), 1) == [utc(2026, 1, 1, 12, 0, 30)]


def test_crontab_canonical_normalises_whitespace_and_case() -> None:
    """A crontab's canonical form is its fields upper-cased and single-spaced."""
    parsed = parse_cron("  0\t9  * *   mon-fri ")
    assert (parsed.canonical, parsed.label, parsed.kind) == (
        "0 9 * * MON-FRI",
        "0 9 * * MON-FRI",
        "crontab",
    )
    assert parse_cron(parsed.canonical).canonical == parsed.canonical


def test_next_fire_is_strictly_after() -> None:
    """A fire exactly at `after` is not returned again; microseconds round up."""
    daily = parse_cron("0 0 * * *")
    assert daily.next_fire(utc(2026, 1, 1)) == utc(2026, 1, 2)
    assert daily.next_fire(utc(2026, 1, 1) - timedelta(microseconds=1)) == utc(2026, 1, 1)


def test_next_fire_reads_wall_times_in_the_zone() -> None:
    """Fires are wall times in the given zone, returned as aware UTC datetimes."""
    fire = parse_cron("0 9 * * *").next_fire(utc(2026, 1, 1), ZoneInfo("Asia/Kolkata"))
    assert fire == utc(2026, 1, 1, 3, 30)
    assert fire is not None and fire.tzinfo is UTC


def test_next_fire_times_lists_in_display_zone() -> None:
    """next_fire_times gives `count` aware datetimes in the requested zone."""
    got = next_fire_times("0 9 * * *", count=3, tz="America/New_York", after=utc(2026, 1, 1))
    assert [fire.isoformat() for fire in got] == [
        "2026-01-01T09:00:00-05:00",
        "2026-01-02T09:00:00-05:00",
        "2026-01-03T09:00:00-05:00",
    ]
    assert len(next_fire_times("*/5 * * * *")) == 5


def test_naive_after_is_rejected() -> None:
    """A naive `after` is ambiguous, so it is refused."""
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_cron("@daily").next_fire(datetime(2026, 1, 1))


# ---------------------------------------------------------------------- seed encoding


def test_seed_synonyms_case_and_whitespace() -> None:
    """Long keys, any case and whitespace anywhere read like the short form."""
    short = parse_cron("h2m30s0")
    assert short.canonical == "o*d*w*h2m30s0"
    for spec in (
        "Hours 2 Minutes 30 Seconds 0",
        "hour2 minute30 sec0",
        "H2M30S0",
        "months* days* weekdays* hours2 minutes30 secs0",
        "s0 m30 h2",
    ):
        assert parse_cron(spec).canonical == short.canonical, spec
    assert parse_cron("daysofweek0 h1 m0 s0").canonical == "o*d*w0h1m0s0"
    assert parse_cron("weekday 0 day 1 month 1 h0 m0 second 0").canonical == "o1d1w0h0m0s0"


def test_seed_comma_lists_are_sorted_and_deduplicated() -> None:
    """Comma lists fire at each value and canonicalise sorted without duplicates."""
    parsed = parse_cron("m 30 , 0 ,30 s0")
    assert parsed.canonical == "o*d*w*h*m0,30s0"
    assert [fire.minute for fire in fires(parsed, utc(2026, 1, 1), 3)] == [30, 0, 30]


def test_seed_missing_seconds_draws_one_fixed_second() -> None:
    """A seed without seconds gets one second from the rng, fixed in the canonical form."""
    expected_second = random.Random(3).randrange(60)
    parsed = parse_cron("h2m30", rng=random.Random(3))
    assert parsed.canonical == f"o*d*w*h2m30s{expected_second}"
    assert parse_cron("h2m30", rng=random.Random(3)) == parsed
    assert fires(parsed, utc(2026, 1, 1), 2) == [
        utc(2026, 1, 1, 2, 30, expected_second),
        utc(2026, 1, 2, 2, 30, expected_second),
    ]
    seconds = {parse_cron("h2m30", rng=random.Random(seed)).canonical for seed in range(20)}
    assert len(seconds) > 1


def test_seed_canonical_round_trip_uses_no_randomness() -> None:
    """Parsing a seed's canonical form gives the same spec without drawing."""
    parsed = parse_cron("d1,15 h6", rng=random.Random(1))
    again = parse_cron(parsed.canonical, rng=NoRandom())
    assert again == parsed
    assert (again.kind, again.label) == ("seed", parsed.canonical)
    assert fires(again, utc(2026, 1, 1), 4) == fires(parsed, utc(2026, 1, 1), 4)


def test_seed_day_and_weekday_must_both_match() -> None:
    """d13 w4 is Friday the 13th only (AND, unlike crontab's OR)."""
    got = fires("o*d13w4h0m0s0", utc(2026, 1, 1), 3)
    assert got == [utc(2026, 2, 13), utc(2026, 3, 13), utc(2026, 11, 13)]
    assert all(fire.weekday() == 4 for fire in got)


def test_seed_weekday_0_is_monday() -> None:
    """The seed's weekday 0 is Monday (2026-01-05), 6 is Sunday."""
    assert fires("w0h9m0s0", utc(2026, 1, 1), 1) == [utc(2026, 1, 5, 9)]
    assert fires("w6h9m0s0", utc(2026, 1, 1), 1) == [utc(2026, 1, 4, 9)]


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.just("*"), st.lists(st.integers(0, 59), min_size=1, max_size=3)),
        min_size=6,
        max_size=6,
    ),
    seed=st.integers(0, 1000),
)
def test_seed_canonical_round_trip_property(values: list[str | list[int]], seed: int) -> None:
    """Any valid seed spec's canonical form parses to itself with the same fires."""
    ranges = [(1, 12), (1, 28), (0, 6), (0, 23), (0, 59), (0, 59)]
    parts = []
    for key, value, (low, high) in zip("odwhms", values, ranges, strict=True):
        if isinstance(value, list):
            value = ",".join(str(low + number % (high - low + 1)) for number in value)
        parts.append(f"{key}{value}")
    parsed = parse_cron("".join(parts), rng=random.Random(seed))
    again = parse_cron(parsed.canonical, rng=NoRandom())
    assert again.canonical == parsed.canonical
    after = utc(2026, 3, 1)
    assert fires(again, after, 5, "Europe/Berlin") == fires(parsed, after, 5, "Europe/Berlin")


# ------------------------------------------------------------------ predefined names


@pytest.mark.parametrize("name", ["HALFHOURLY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY"])
def test_predefined_keeps_label_and_offset_through_round_trip(name: str) -> None:
    """A predefined name's canonical form keeps the name as label and the drawn offset."""
    parsed = parse_cron(name.lower(), rng=random.Random(42))
    assert (parsed.label, parsed.kind) == (name, "predefined")
    assert parsed.canonical.startswith(f"{name} o*")
    again = parse_cron(parsed.canonical, rng=NoRandom())
    assert again == parsed
    after = utc(2026, 1, 1)
    assert fires(again, after, 5, "Europe/Berlin") == fires(parsed, after, 5, "Europe/Berlin")


@pytest.mark.parametrize("name", ["HALFHOURLY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY"])
def test_predefined_offsets_spread(name: str) -> None:
    """Different rng seeds give different offsets, so tasks do not all fire together."""
    offsets = {parse_cron(name, rng=random.Random(seed)).canonical for seed in range(20)}
    assert len(offsets) > 10


@pytest.mark.parametrize(
    ("name", "gap"),
    [
        ("HALFHOURLY", timedelta(minutes=30)),
        ("HOURLY", timedelta(hours=1)),
        ("DAILY", timedelta(days=1)),
        ("WEEKLY", timedelta(weeks=1)),
    ],
)
def test_predefined_periods(name: str, gap: timedelta) -> None:
    """Each predefined name fires at its period, at a fixed offset."""
    for seed in range(5):
        got = fires(parse_cron(name, rng=random.Random(seed)), utc(2026, 1, 1), 5)
        assert {later - earlier for earlier, later in itertools.pairwise(got)} == {gap}


def test_halfhourly_minutes_are_30_apart() -> None:
    """HALFHOURLY's minutes are x and x+30 with x in 0-29."""
    for seed in range(30):
        canonical = parse_cron("HALFHOURLY", rng=random.Random(seed)).canonical
        minutes = canonical.split("m")[1].split("s")[0].split(",")
        first, second = (int(minute) for minute in minutes)
        assert 0 <= first <= 29 and second == first + 30


def test_monthly_day_is_1_to_28() -> None:
    """MONTHLY's random day is 1-28, so it fires every month."""
    for seed in range(50):
        parsed = parse_cron("MONTHLY", rng=random.Random(seed))
        day = int(parsed.canonical.split("d")[1].split("w")[0])
        assert 1 <= day <= 28
        assert len({fire.month for fire in fires(parsed, utc(2026, 1, 1), 12)}) == 12


def test_predefined_with_pinned_offset() -> None:
    """A predefined name with an explicit offset uses it (a missing second is drawn)."""
    parsed = parse_cron("daily h3 m0 s0")
    assert (parsed.canonical, parsed.label) == ("DAILY o*d*w*h3m0s0", "DAILY")


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("61 * * * *", "minute 61 out of range 0-59 in '61 * * * *'"),
        ("* 24 * * *", "hour 24 out of range 0-23 in '* 24 * * *'"),
        ("* * 0 * *", "day-of-month 0 out of range 1-31 in '* * 0 * *'"),
        ("* * 32 * *", "day-of-month 32 out of range 1-31"),
        ("* * * 0 *", "month 0 out of range 1-12"),
        ("* * * 13 *", "month 13 out of range 1-12"),
        ("* * * * 8", "day-of-week 8 out of range 0-7"),
        ("60 * * * * *", "second 60 out of range 0-59 in '60 * * * * *'"),
        ("*/0 * * * *", "minute step 0 out of range 1-59"),
        ("*/x * * * *", "minute step 'x' is not a number"),
        ("5/15 * * * *", "minute step '5/15' needs a range or '*'"),
        ("5-1 * * * *", "minute range '5-1' is inverted (5 > 1)"),
        ("* * * * FRI-MON", "day-of-week range 'FRI-MON' is inverted"),
        ("1,,2 * * * *", "minute '1,,2' has an empty list item"),
        ("* MON * * *", "hour 'MON' is not a number in"),
        ("* * * FOO *", "month 'FOO' is not a number or name"),
        ("0 0 31 2 *", "day-of-month 31 never occurs in month 2 in '0 0 31 2 *'"),
        ("* * * *", "expected 5 crontab fields"),
        ("* * * * * * *", "got 7 in '* * * * * * *'"),
        ("", "empty schedule spec ''"),
        ("   ", "empty schedule spec"),
        ("!!!", "cannot parse schedule spec '!!!'"),
        ("-5 * * * *", "minute -5 out of range 0-59 in '-5 * * * *'"),
        ("-1 * * * *", "minute -1 out of range 0-59"),
        ("* -5 * * *", "hour -5 out of range 0-23 in '* -5 * * *'"),
        ("* 1--5 * * *", "hour -5 out of range 0-23"),
        ("* * * * \u017fun", "day-of-week '\u017fun' is not a number or name"),
        ("0 * * * * 8", "day-of-week 8 out of range 0-7"),
        ("@reboot", "Norc has no @reboot"),
        ("@often", "unknown alias '@often'"),
        ("FORTNIGHTLY", "unknown schedule name 'FORTNIGHTLY'"),
        ("x5 h2", "unknown key 'x' in seed spec 'x5 h2'"),
        ("o13", "month 13 out of range 1-12 in 'o13'"),
        ("d0", "day 0 out of range 1-31"),
        ("w7", "weekday 7 out of range 0-6"),
        ("h24", "hour 24 out of range 0-23 in 'h24'"),
        ("m60", "minute 60 out of range 0-59"),
        ("s60", "second 60 out of range 0-59"),
        ("h2 hours3", "hour ('hours') given twice"),
        ("h", "hour ('h') value '' in seed spec 'h' must be '*' or comma-separated numbers"),
        ("h1-3", "value '1-3'"),
        ("o2d30", "day 30 never occurs in month 2 in 'o2d30'"),
        ("DAILY o*d*w*h*m0s0", "does not fit DAILY"),
        ("MONTHLY o*d29w*h0m0s0", "does not fit MONTHLY"),
        ("HALFHOURLY o*d*w*h*m10,20s0", "does not fit HALFHOURLY"),
        ("DAILY 5", "must start with a key"),
    ],
)
def test_invalid_specs_name_the_bad_part(spec: str, message: str) -> None:
    """Invalid specs raise InvalidSpec (a ValueError) whose message points at the bad part."""
    with pytest.raises(InvalidSpec) as caught:
        parse_cron(spec)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


spec_noise = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="0123456789*/-, \t@abcdefhjmnoswxyzAJMNOSW\u00b2\u00a0\u2003", max_size=30),
    st.lists(st.sampled_from(["*", "-", "/", ",", " ", "0", "9" * 5000, "MON"]), max_size=12).map(
        "".join
    ),
)


@settings(max_examples=300, deadline=None)
@given(spec=spec_noise)
def test_any_text_parses_or_raises_invalid_spec(spec: str) -> None:
    """Arbitrary text parses (its canonical form re-parsing equal) or raises InvalidSpec."""
    try:
        parsed = parse_cron(spec, rng=random.Random(0))
    except InvalidSpec:
        return
    assert parse_cron(parsed.canonical, rng=NoRandom()) == parsed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("9" * 5000 + " * * * *", "minute 999999999999... (5000 digits) out of range 0-59 in "),
        ("*/" + "9" * 5000 + " * * * *", "minute step 999999999999... (5000 digits) out of range"),
        ("* * 1-" + "3" * 4500 + " * *", "day-of-month 333333333333... (4500 digits) out of range"),
        ("h2 m" + "7" * 5000, "minute 777777777777... (5000 digits) out of range 0-59"),
    ],
)
def test_numbers_with_thousands_of_digits(spec: str, message: str) -> None:
    """A huge number is out of range, told in one short line (int() would refuse 4300+ digits)."""
    with pytest.raises(InvalidSpec) as caught:
        parse_cron(spec)
    text = str(caught.value)
    assert message in text
    assert f"({len(spec)} characters)" in text
    assert len(text) < 300 and "\n" not in text


def test_leading_zeros_are_just_zeros() -> None:
    """A long run of leading zeros is the number after them, as cron's atoi reads it."""
    assert fires("0" * 5000 + "5 * * * *", utc(2026, 1, 1), 1) == [utc(2026, 1, 1, 0, 5)]


@pytest.mark.parametrize(
    ("spec", "name", "position"),
    [
        ("*\u00a0* * * *", "U+00A0 (NO-BREAK SPACE)", 1),
        ("0 2 * *\u2003*", "U+2003 (EM SPACE)", 7),
        ("* * * * *\u2003", "U+2003 (EM SPACE)", 9),
        ("\u3000@daily", "U+3000 (IDEOGRAPHIC SPACE)", 0),
        ("h2\u00a0m30", "U+00A0 (NO-BREAK SPACE)", 2),
        ("DAILY\u2009h2m0s0", "U+2009 (THIN SPACE)", 5),
    ],
)
def test_only_ascii_whitespace_separates_fields(spec: str, name: str, position: int) -> None:
    """A no-break or em space between fields is an error naming the character and where it is."""
    with pytest.raises(InvalidSpec) as caught:
        parse_cron(spec)
    assert f"has {name} at position {position}: fields are separated by ASCII" in str(caught.value)


def test_tabs_and_newlines_are_separators() -> None:
    """ASCII whitespace (tabs, a trailing newline from a file) separates fields as spaces do."""
    assert parse_cron("0\t2 *  *\t*\n").canonical == "0 2 * * *"


@pytest.mark.parametrize(
    ("spec", "command"),
    [
        ("* * * * * /bin/true", "'/bin/true'"),
        ("0 2 * * * backup.sh --all", "'backup.sh --all'"),
        ("0 2 * * * root /usr/bin/backup", "'root /usr/bin/backup'"),
        ("30 2 * * MON-FRI echo hi", "'echo hi'"),
        ("@daily /bin/true", "'/bin/true'"),
    ],
)
def test_a_crontab_line_with_a_command_is_refused(spec: str, command: str) -> None:
    """A pasted crontab line is told that a schedule spec has no command, and where crontabs go."""
    with pytest.raises(InvalidSpec) as caught:
        parse_cron(spec)
    text = str(caught.value)
    assert text.startswith("a schedule spec has no command: ")
    assert f"with the command {command}" in text
    assert "`norc crontab import` is for crontab files" in text


def test_six_fields_are_still_seconds_first() -> None:
    """Six time-like fields are a 6-field spec, not a command: '0 * * * * 5' is Fridays."""
    assert parse_cron("0 * * * * 5").canonical == "0 * * * * 5"
    assert parse_cron("0 * * * * FRI,MON").canonical == "0 * * * * FRI,MON"
    # Other crons' syntax in a sixth field is a field error, not a command.
    for spec, message in (
        ("0 0 12 * * ?", "day-of-week '?' is not a number or name"),
        ("0 0 12 * * 5L", "day-of-week '5L' is not a number or name"),
        ("0 0 12 * * MON#2", "day-of-week 'MON#2' is not a number or name"),
    ):
        with pytest.raises(InvalidSpec, match=re.escape(message)):
            parse_cron(spec)


def test_unknown_timezone_is_invalid_spec() -> None:
    """An unknown IANA name raises InvalidSpec naming it, wherever a zone is taken."""
    daily = parse_cron("@daily")
    for call in (
        lambda: daily.next_fire(utc(2026, 1, 1), "Mars/Base"),
        lambda: daily.next_fires(utc(2026, 1, 1), "Mars/Base", 3),
        lambda: next_fire_times("@daily", tz="Mars/Base"),
    ):
        with pytest.raises(InvalidSpec, match="unknown timezone 'Mars/Base'"):
            call()
    for bad in ("", "Europe", "../etc/passwd", "\x00", "A" * 5000):
        with pytest.raises(InvalidSpec, match="unknown timezone"):
            daily.next_fire(utc(2026, 1, 1), bad)
    with pytest.raises(InvalidSpec, match="a timezone must be an IANA name, got int"):
        daily.next_fire(utc(2026, 1, 1), 5)  # type: ignore[arg-type]
