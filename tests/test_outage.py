"""A database that goes away for 30 s kills no daemon and loses or doubles no work.

Runs against a private PostgreSQL server the test starts itself (initdb into a
temporary directory, a free port), so stopping it disturbs nothing else. It runs where
CI runs the PostgreSQL suite (``NORC_TEST_POSTGRES_URL`` set); there, missing server
binaries fail the test rather than skip it.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import norc
from norc.status import DaemonStatus, InstanceStatus
from norc.testing import wait_until
from tests.servers import PrivatePostgres
from tests.tasks import Outcome, Sleep

pytestmark = pytest.mark.skipif(
    not os.environ.get("NORC_TEST_POSTGRES_URL"),
    reason="needs PostgreSQL server binaries: runs where NORC_TEST_POSTGRES_URL is set",
)


def test_an_enqueue_while_the_server_is_away_names_it_and_the_next_one_works(
    private_pg: PrivatePostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-statement enqueue (run on the driver's own connection) fails with
    DatabaseUnreachable naming the server while it is stopped, and works once it is back:
    the pooled connection its statement found dead is not handed out again."""
    from norc.errors import DatabaseUnreachable
    from norc.store import connections

    monkeypatch.setattr(connections, "PING_AFTER_IDLE", 3600.0)  # no ping at checkout
    app = norc.Norc(private_pg.url, log_dir=tmp_path / "logs")
    app.save_task(Outcome(name="ok"))
    first = app.enqueue("ok")
    private_pg.stop()
    with pytest.raises(DatabaseUnreachable, match=f"127.0.0.1:{private_pg.port}"):
        app.enqueue("ok")
    private_pg.start()
    second = app.enqueue("ok")
    app.close()
    check = norc.Norc(private_pg.url, log_dir=tmp_path / "logs")
    assert check.db.count_by_status([first, second]) == {"QUEUED": 2}
    check.close()


@pytest.mark.slow
def test_thirty_second_database_outage_loses_nothing(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    """Executor and scheduler survive the server stopping for 30 s; all work done exactly once."""
    app = norc.Norc(private_pg.url, log_dir=tmp_path / "logs")
    app.save_task(Sleep(name="work", seconds=0.2))
    app.save_task(Outcome(name="tick"))
    schedule = app.add_schedule("tick", every=0.5, start=0, make_up=True)
    batch = app.enqueue_many("work", 300)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "NORC_HEARTBEAT_INTERVAL": "1",
        "NORC_HEARTBEAT_TIMEOUT": "6",
    }
    norc_bin = str(Path(sys.executable).with_name("norc"))
    common = [norc_bin, "--db", private_pg.url, "--log-dir", str(tmp_path / "logs")]
    # Files, not pipes: daemons log to stderr, and a pipe nobody reads fills up.
    outputs = [tempfile.TemporaryFile() for _ in range(3)]  # noqa: SIM115 - read at the end
    procs = [
        subprocess.Popen([*common, "executor", "-c", "2"], env=env, stderr=outputs[0]),
        subprocess.Popen([*common, "executor", "-c", "2"], env=env, stderr=outputs[1]),
        subprocess.Popen([*common, "scheduler"], env=env, stderr=outputs[2]),
    ]
    try:
        wait_until(lambda: app.db.count_by_status(batch).get("SUCCESS", 0) >= 20, 60)
        app.db.dispose()
        private_pg.stop()
        time.sleep(30)
        assert all(p.poll() is None for p in procs), "a daemon died while the database was away"
        private_pg.start()
        wait_until(lambda: app.db.count_by_status(batch).get("SUCCESS", 0) == len(batch), 180, 0.5)
        time.sleep(3)
        assert all(p.poll() is None for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(timeout=60)
        errors = []
        for out in outputs:
            out.seek(0)
            errors.append(out.read().decode(errors="replace"))
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    records = app.db.instances_by_id(batch)
    assert {r.status for r in records} == {InstanceStatus.SUCCESS}
    # Runs that ended while the outcome could not be written keep their real end time.
    assert max(r.duration or 0 for r in records) < 5
    # Every fire of the schedule, before, during and after the outage: present once.
    fires = sorted(r.fire_time for r in app.instances(limit=None) if r.schedule_id == schedule.id)
    assert len(fires) == len(set(fires))
    steps = {round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(fires)}  # type: ignore[operator]
    assert steps == {0.5}
    assert (fires[-1] - fires[0]).total_seconds() > 35  # type: ignore[operator]
    # Nobody was declared dead: every daemon ended normally.
    assert {d.status for d in app.daemons()} == {DaemonStatus.ENDED.value}
    assert not app.instances(status={InstanceStatus.RUNNING, InstanceStatus.INTERRUPTED})
    app.close()
