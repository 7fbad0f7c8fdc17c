"""The chaos benchmark in short (bench/chaos.py): about a minute of SIGKILLed daemons.

Three ``norc scheduler`` and three ``norc executor`` processes on PostgreSQL, in a
database of their own (``norc_chaos_ci``, created here on the server that
``NORC_TEST_POSTGRES_URL`` names), 20 schedules, a steady enqueue stream with Jobs, and
a scheduler or an executor (in turn) SIGKILLed and replaced every 3-6 s (an executor
just after a burst of short instances was enqueued). The run is checked once (a module
fixture); each test asserts one property of it, so that a known bug marks only the
property it breaks. The xfails name the bugs the code still has (see
docs/reliability.md); they are not strict, since whether a one-minute storm meets a
timing bug is chance: when one is fixed, remove its xfail. (Fixed since e9ae268, their
xfails gone: the scheduler's catch-up insert, workers outliving their SIGKILLed
executor, and unstarted claims of a killed executor settled INTERRUPTED.)

It runs where CI runs the PostgreSQL suite (``NORC_TEST_POSTGRES_URL`` set); there an
unreachable server fails the test instead of skipping it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench.chaos import OUTLIVE_AFTER, Chaos, Config, Result, print_result

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("NORC_TEST_POSTGRES_URL"),
        reason="needs PostgreSQL: runs where NORC_TEST_POSTGRES_URL is set",
    ),
]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Result]:
    url = sa.engine.make_url(os.environ["NORC_TEST_POSTGRES_URL"]).set(database="norc_chaos_ci")
    cfg = Config(
        backend="postgresql",
        url=url.render_as_string(hide_password=False),
        minutes=1.0,
        schedules=20,
        settle=15.0,
        alternate_kills=True,
        # A 6 s body starts every second, so every killed executor runs some; 40 short
        # ones are enqueued just before each executor kill, so it has work claimed ahead
        # and bodies that have just finished.
        long_every=1.0,
        long_seconds=6.0,
        burst_before_kill=40,
        # ...and each replacement executor is killed too, 2.5 s after its start, while
        # its workers may still be starting up.
        kill_replacement_after=2.5,
        seed=7,
        workdir=Path(tmp_path_factory.mktemp("chaos")),
        quiet=True,
    )
    result = Chaos(cfg).run()
    # the table and examples: with -s, else in the first test's captured setup output
    print_result(result, examples=10)
    yield result


def test_the_storm_killed_schedulers_and_executors(chaos: Result) -> None:
    counts = chaos.counts
    assert counts["kills"] >= 8
    assert counts["expected_fires"] > 300
    assert counts["enqueued"] > 150


def test_no_fire_is_missing(chaos: Result) -> None:
    counts = chaos.counts
    assert counts["missing"] == 0, chaos.problems.get("missing fires")


def test_no_fire_is_duplicated(chaos: Result) -> None:
    counts = chaos.counts
    assert counts["duplicated"] == 0
    assert counts["unexpected_fires"] == 0


def test_every_instance_is_final(chaos: Result) -> None:
    counts = chaos.counts
    assert counts["non_final"] == 0, chaos.problems.get("non-final")


def test_every_body_ran_unless_its_start_was_recorded(chaos: Result) -> None:
    """Every enqueued instance, Job node and fire that was not SKIPPED began its body,
    except ones whose start its executor had recorded when it was SIGKILLed (handed to a
    worker, or waiting in a pipe behind short runs: the window docs/reliability.md
    documents), which end INTERRUPTED; what an executor had only claimed went back to
    its queue and ran (bodies cut off by the kill count as begun)."""
    counts = chaos.counts
    problems = chaos.problems
    assert counts["enqueued_lost"] == 0
    assert counts["never_ran"] == counts["never_ran_marked"], problems.get("never ran")


def test_no_body_ran_twice_without_a_recorded_interruption(chaos: Result) -> None:
    counts = chaos.counts
    problems = chaos.problems
    assert counts["ran_twice_unexplained"] == 0, problems.get("body ran twice (UNEXPLAINED)")


def test_job_nodes_start_after_their_parents_succeeded(chaos: Result) -> None:
    counts = chaos.counts
    assert counts["job_order_violations"] == 0


def test_no_process_outlives_its_killed_executor(chaos: Result) -> None:
    counts = chaos.counts
    problems = chaos.problems
    assert counts["kills_leaving_processes"] == 0, problems.get(
        f"processes of a killed daemon alive {OUTLIVE_AFTER:g} s later"
    )
    assert counts["finished_after_death"] == 0
    assert counts["leftover_processes"] == 0


def test_a_finished_body_recorded_interrupted_says_its_outcome_may_be_lost(
    chaos: Result,
) -> None:
    """A body that ended just before its executor died (inside the end-to-durable window,
    docs/reliability.md) is recorded INTERRUPTED with a reason saying its outcome may not
    have been recorded, not as a plain failure: a task not safe to repeat (INTERRUPTED
    not in its retry_on) is then left for a person to look at."""
    examples = chaos.problems.get("body finished BEFORE its executor died, recorded INTERRUPTED")
    for example in examples or []:
        assert "not recorded" in example, example
