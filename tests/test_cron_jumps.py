"""cronie's clock-jump classes on a made-up zone: small and large jumps forward and back.

No DST rule in use makes them (DST jumps are 30 or 60 minutes, cronie's
"medium" and "negative" cases, tested in test_cron.py), so the zone here is
built from a TZif file written by the test. cronie's main loop (cron.c) sorts
a jump by ``timeDiff``, the minutes from the last minute it handled to the new
one: a jump forward of g minutes has timeDiff g + 1, a jump back of f minutes
1 - f.

* small, timeDiff <= 5 (a jump forward of at most 4 minutes): every job runs
  for each skipped minute, wildcard jobs too;
* large, |timeDiff| > 180 (forward 3 hours or more, back more than 181
  minutes): virtual time is reset, every job runs for the new wall time only;
  forward, nothing skipped runs; back, every job runs again in the second pass.
"""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from norc.schedules.cron import parse_cron

# Offsets (seconds east of UTC) and the instants they start at.
SMALL_GAP = datetime(2026, 1, 10, 2, 0, tzinfo=UTC)  # +00:00 -> +00:03, 02:00 -> 02:03
LARGE_GAP = datetime(2026, 2, 10, 2, 0, tzinfo=UTC)  # +00:03 -> +04:00, 02:03 -> 06:00
LARGE_FOLD = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)  # +04:00 -> +00:00, 06:00 -> 02:00
SMALL_FOLD = datetime(2026, 4, 10, 2, 0, tzinfo=UTC)  # +00:00 -> -00:30, 02:00 -> 01:30
OFFSETS = (0, 180, 4 * 3600, 0, -1800)


def tzif(transitions: list[datetime], offsets: tuple[int, ...]) -> bytes:
    """A TZif version 2 file: ``offsets[0]`` until the first transition, then the next ones."""
    names = b"".join(b"Z%d\0" % i for i in range(len(offsets)))
    types = b"".join(struct.pack(">lBB", offset, 0, 3 * i) for i, offset in enumerate(offsets))

    def block(time_format: str) -> bytes:
        header = b"TZif2" + b"\0" * 15
        counts = struct.pack(">6l", 0, 0, 0, len(transitions), len(offsets), len(names))
        times = b"".join(struct.pack(time_format, int(t.timestamp())) for t in transitions)
        indices = bytes(range(1, len(offsets)))
        return header + counts + times + indices + types + names

    return block(">l") + block(">q") + b"\n\n"


ZONE = ZoneInfo.from_file(
    io.BytesIO(tzif([SMALL_GAP, LARGE_GAP, LARGE_FOLD, SMALL_FOLD], OFFSETS)), key="Test/Jumps"
)


def walls(spec: str, after: datetime, until: datetime) -> list[str]:
    """Norc's fires of ``spec`` in (after, until] as local wall times with offsets."""
    parsed = parse_cron(spec)
    out = []
    fire = parsed.next_fire(after, ZONE)
    while fire is not None and fire <= until:
        out.append(fire.astimezone(ZONE).strftime("%d %H:%M%z"))
        fire = parsed.next_fire(fire, ZONE)
    return out


def test_the_zone_is_as_described() -> None:
    """The made-up zone has the offsets the tests assume."""
    assert [ZONE.utcoffset(datetime(2026, m, 1)).total_seconds() for m in range(1, 6)] == [
        0,
        180,
        4 * 3600,
        0,
        -1800,
    ]


def test_small_gap_runs_every_job_at_the_jump() -> None:
    """02:00-02:02 never happen; fixed-time and wildcard jobs for them both fire at 02:03."""
    day = (datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 1, 10, 12, tzinfo=UTC))
    assert walls("1 2 * * *", *day) == ["10 02:03+0003"]
    assert walls("1 * * * *", *day)[1:4] == ["10 01:01+0000", "10 02:03+0003", "10 03:01+0003"]


def test_large_gap_runs_nothing_skipped() -> None:
    """02:03-05:59 never happen; neither a fixed-time nor a wildcard job fires for them."""
    day = (datetime(2026, 2, 9, 12, tzinfo=UTC), datetime(2026, 2, 10, 12, tzinfo=UTC))
    assert walls("30 3 * * *", *day) == []
    assert walls("0 6 * * *", *day) == ["10 06:00+0400"]
    morning = (day[0], datetime(2026, 2, 10, 4, tzinfo=UTC))  # until 08:00+04:00
    assert walls("0 */2 * * *", *morning)[-3:] == [
        "10 02:00+0003",
        "10 06:00+0400",
        "10 08:00+0400",
    ]


def test_large_fold_runs_every_job_in_both_passes() -> None:
    """02:00-05:59 happen twice; a fixed-time 03:30 fires in both passes."""
    day = (datetime(2026, 3, 9, 12, tzinfo=UTC), datetime(2026, 3, 10, 12, tzinfo=UTC))
    assert walls("30 3 * * *", *day) == ["10 03:30+0400", "10 03:30+0000"]


def test_small_fold_runs_fixed_time_jobs_once() -> None:
    """A 30-minute jump back is cronie's negative case: a fixed-time 01:45 fires once."""
    day = (datetime(2026, 4, 9, 12, tzinfo=UTC), datetime(2026, 4, 10, 12, tzinfo=UTC))
    assert walls("45 1 * * *", *day) == ["10 01:45+0000"]
    assert walls("*/15 1 * * *", *day)[-3:] == ["10 01:45+0000", "10 01:30-0030", "10 01:45-0030"]
