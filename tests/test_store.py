"""The schema: created on first use, migrated by Alembic, checked on open."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import norc
from norc.errors import SchemaNewer, SchemaOutdated
from norc.status import InstanceStatus
from norc.store import migrate
from norc.store.connections import normalise_url
from norc.store.schema import metadata
from norc.testing import wait_until
from tests.tasks import Outcome


def test_migrations_build_exactly_the_declared_schema(db_url: str) -> None:
    """`norc db upgrade` on an empty database yields the tables the code declares, no drift."""
    engine = sa.create_engine(normalise_url(db_url))
    before, after = migrate.upgrade(engine)
    assert before is None and after == migrate.head_revision()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": "norc_alembic_version"})
        diff = compare_metadata(context, metadata)
        queues = conn.execute(sa.text("SELECT name, type FROM norc_queues")).all()
    engine.dispose()
    assert diff == []
    assert [tuple(q) for q in queues] == [("default", "dbqueue")]


def test_a_database_behind_the_code_is_refused_with_advice(db_url: str, tmp_path: Path) -> None:
    """An older schema revision is SchemaOutdated telling the user to run `norc db upgrade`."""
    app = norc.Norc(db_url, log_dir=tmp_path)
    app.tasks()
    with app.db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE norc_alembic_version SET version_num = '0005'"))
    other = norc.Norc(db_url, log_dir=tmp_path)
    with pytest.raises(SchemaOutdated, match="norc db upgrade"):
        other.tasks()
    app.close()
    other.close()


def test_a_database_ahead_of_the_code_is_refused_with_advice(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A revision this Norc does not know (a newer Norc migrated the database) is
    SchemaNewer telling the user to install that version, both on open and in `norc db
    upgrade`, which cannot go back: one line, exit code 2, not Alembic's traceback."""
    app = norc.Norc(sqlite_url, log_dir=tmp_path)
    app.tasks()
    with app.db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE norc_alembic_version SET version_num = '9999'"))
    app.close()
    other = norc.Norc(sqlite_url, log_dir=tmp_path)
    with pytest.raises(SchemaNewer, match="'9999', which this Norc does not know"):
        other.tasks()
    other.close()
    norc_bin = str(Path(sys.executable).with_name("norc"))
    for args in (["db", "upgrade"], ["executor"]):
        result = subprocess.run(
            [norc_bin, "--db", sqlite_url, *args], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"norc: error: database {sqlite_url} has Norc schema revision '9999', which this"
            " Norc does not know (it needs "
            f"{migrate.head_revision()!r}): a newer Norc migrated it; install that version"
        ]


def test_times_come_back_aware_utc(app: norc.Norc) -> None:
    """Every stored time is timezone-aware UTC on every backend."""
    from tests.tasks import Outcome

    app.save_task(Outcome(name="t"))
    record = app.instance(app.enqueue("t"))
    assert record.created_at is not None and record.created_at.utcoffset() is not None
    assert record.created_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_db_upgrade_migrates_an_old_database(db_url: str, tmp_path: Path) -> None:
    """A database made by the first release is refused, then `norc db upgrade` brings it
    to the current schema with its data kept."""
    import subprocess
    import sys

    engine = sa.create_engine(normalise_url(db_url))
    with engine.begin() as conn:
        from alembic import command

        command.upgrade(migrate.alembic_config(conn), "0001")
        conn.execute(
            sa.text(
                "INSERT INTO norc_tasks (name, type, type_path, plugin, params, description,"
                " timeout, finally_timeout, created_at, updated_at) VALUES ('old', 'Outcome',"
                " 'tests.tasks:Outcome', 'application', '{}', '', NULL, 10,"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    with pytest.raises(SchemaOutdated, match="'0001'"):
        norc.Norc(db_url, log_dir=tmp_path).tasks()
    result = subprocess.run(
        [str(Path(sys.executable).with_name("norc")), "--db", db_url, "db", "upgrade"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"0001 -> {migrate.head_revision()}" in result.stdout
    app = norc.Norc(db_url, log_dir=tmp_path)
    record = app.task_record("old")
    assert record.max_retries == 0 and record.overlap == "allow"
    app.close()


def test_daemons_starting_together_create_the_schema_once(db_url: str, tmp_path: Path) -> None:
    """Six processes opening a brand-new database at the same moment all succeed."""
    import subprocess
    import sys

    script = "import sys, norc; norc.Norc(sys.argv[1], log_dir=sys.argv[2]).tasks()"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, db_url, str(tmp_path)], stderr=subprocess.PIPE
        )
        for _ in range(6)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    assert [q[0] for q in norc.Norc(db_url, log_dir=tmp_path).queues()] == ["default"]


def test_a_connection_the_server_closed_while_idle_is_replaced(
    app: norc.Norc, backend: str, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled connection killed by the server (a restart, an idle timeout) costs no error."""
    if backend == "sqlite":
        pytest.skip("SQLite has no server to close a connection")
    from norc.store import connections

    monkeypatch.setattr(connections, "PING_AFTER_IDLE", 0.2)
    app.save_task(Outcome(name="ok"))  # the pool now holds one connection, in use just now
    who = "SELECT pg_backend_pid()" if backend == "postgresql" else "SELECT CONNECTION_ID()"
    with app.db.reading() as conn:
        session = int(conn.execute(sa.text(who)).scalar_one())
    killer = sa.create_engine(normalise_url(db_url))
    with killer.begin() as conn:
        if backend == "postgresql":
            conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": session})
        else:
            conn.execute(sa.text(f"KILL {session}"))
    killer.dispose()
    time.sleep(0.3)  # idle for longer than PING_AFTER_IDLE: pinged, found dead, replaced
    instance_id = app.enqueue("ok")
    assert app.instance(instance_id).status is InstanceStatus.QUEUED


def test_a_batch_of_outcomes_is_stored_exactly_as_written(app: norc.Norc) -> None:
    """The recorder's batched write stores each outcome's own values, to the microsecond,
    and leaves alone an instance that is no longer RUNNING for that executor."""
    from datetime import UTC, datetime, timedelta

    from norc.abc import Claimant

    app.save_task(Outcome(name="batch"))
    ids = app.enqueue_many("batch", 4)
    claimant = Claimant(executor_id=7, host="h", pid=1)
    claimed = app.queue("default").claim(claimant, 4, 1.0)
    assert sorted(claimed) == ids
    start = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    rows = [
        {
            "id": instance_id,
            "executor_id": 7 if k < 3 else 8,  # the last is not executor 8's: untouched
            "status": ("SUCCESS", "FAILURE", "ERROR", "SUCCESS")[k],
            "started_at": None if k == 2 else start + timedelta(microseconds=k),
            "ended_at": start + timedelta(seconds=1, microseconds=k),
            "exit_code": (None, 3, None, 0)[k],
            "revision": (None, "r2", None, None)[k],
            "error": (None, 'failed: "quoted", ünïcode', "boom", None)[k],
            "log_key": f"tasks/x/batch/batch-{instance_id}",
            "pid": 100 + k,
        }
        for k, instance_id in enumerate(ids)
    ]
    with app.db.transaction() as tx:
        app.db.finish_instances(tx, rows)
    stored = {r.id: r for r in app.db.instances_by_id(ids)}
    for row in rows[:3]:
        record = stored[row["id"]]
        assert record.status == InstanceStatus(row["status"])
        assert (record.started_at, record.ended_at) == (row["started_at"], row["ended_at"])
        assert (record.exit_code, record.revision, record.error) == (
            row["exit_code"],
            row["revision"],
            row["error"],
        )
        assert (record.log_key, record.pid) == (row["log_key"], row["pid"])
    untouched = stored[ids[3]]
    assert untouched.status is InstanceStatus.RUNNING and untouched.ended_at is None


# -- revision 0005: installation id, log keys of their own, ids never reused --------------

_AT_0004 = [
    "INSERT INTO norc_tasks (name, type, type_path, plugin, params, description, timeout,"
    " finally_timeout, created_at, updated_at) VALUES ('old', 'Echo', 'tests.tasks:Echo',"
    " 'application', '{\"message\": \"new run\"}', '', NULL, 10, '2026-01-01 00:00:00',"
    " '2026-01-01 00:00:00')",
    "INSERT INTO norc_daemons (kind, host, pid, status, started_at, ended_at) VALUES"
    " ('executor', 'h', 1, 'ENDED', '2026-01-01 00:00:00', '2026-01-01 00:01:00')",
]


def _instance_at_0004(
    conn: sa.Connection, status: str, *, started: bool, log_key: str | None
) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO norc_instances (task_id, queue, priority, status, attempt, created_at,"
            " enqueued_at, started_at, ended_at, log_key) VALUES (1, 'default', 0, :status, 1,"
            " '2026-01-01 00:00:00', '2026-01-01 00:00:00', :started, :ended, :log_key)"
        ),
        {
            "status": status,
            "started": "2026-01-01 00:00:01" if started else None,
            "ended": "2026-01-01 00:00:02" if status != "QUEUED" else None,
            "log_key": log_key,
        },
    )


def test_upgrading_a_0004_database_keeps_its_logs_readable(db_url: str, log_dir: Path) -> None:
    """A database at revision 0004 with history and old-layout logs: after `norc db
    upgrade` every log is still found, queued work still runs (under the new layout),
    and ids are never handed out again."""
    from alembic import command

    from norc.store.connections import Connections

    old = Connections(db_url)  # Norc's own engine: foreign keys enforced on SQLite too
    with old.engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "0004")
        for statement in _AT_0004:
            conn.execute(sa.text(statement))
        # 1 recorded its key; 2 ran and was stopped from outside (no key recorded);
        # 3 is queued, with its queue item; 4 was pruned (SQLite would reuse its id).
        _instance_at_0004(conn, "SUCCESS", started=True, log_key="tasks/Echo/old/old-1")
        _instance_at_0004(conn, "INTERRUPTED", started=True, log_key=None)
        _instance_at_0004(conn, "QUEUED", started=False, log_key=None)
        _instance_at_0004(conn, "SUCCESS", started=True, log_key=None)
        conn.execute(
            sa.text(
                "INSERT INTO norc_queue_items (queue, priority, instance_id, enqueued_at)"
                " VALUES ('default', 0, 3, '2026-01-01 00:00:00')"
            )
        )
        conn.execute(sa.text("DELETE FROM norc_instances WHERE id = 4"))
    for key, text in [
        ("tasks/Echo/old/old-1", "old run one\n"),
        ("tasks/Echo/old/old-2", "old run two\n"),
        ("executors/executor-1", "old executor\n"),
    ]:
        (log_dir / key).parent.mkdir(parents=True, exist_ok=True)
        (log_dir / key).write_text(text)

    assert migrate.upgrade(old.engine) == ("0004", migrate.head_revision())
    with old.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": "norc_alembic_version"})
        assert compare_metadata(context, metadata) == []
        if old.dialect == "sqlite":
            tables = dict(conn.execute(sa.text("SELECT name, sql FROM sqlite_master")).all())
            assert "AUTOINCREMENT" in tables["norc_instances"]
            assert "AUTOINCREMENT" in tables["norc_daemons"]
    old.dispose()

    app = norc.Norc(db_url, log_dir=log_dir)
    try:
        assert app.logs(1) == "old run one\n"
        assert app.instance(2).log_key == "tasks/Echo/old/old-2"  # recorded by 0005
        assert app.logs(2) == "old run two\n"
        assert app.log_keys.legacy_daemon_id == 1
        assert app.daemon_logs(1) == "old executor\n"
        assert app.instance(3).log_key is None
        with app.executor(isolation="thread") as executor:
            wait_until(lambda: app.instance(3).status.is_final, 30)
        record = app.instance(3)
        assert record.status is InstanceStatus.SUCCESS
        assert record.log_key == f"{app.log_keys.installation}/tasks/Echo/old/old-3"
        assert 'message="new run"' in app.logs(3)
        assert executor.id is not None and executor.id > 1
        assert 'event="executor started"' in app.daemon_logs(executor.id)
        assert app.daemon_logs(1) == "old executor\n"
        # The newest instance pruned, the next one still gets an id of its own.
        app.prune(timedelta(0))
        assert app.enqueue("old") > 3
    finally:
        app.close()


def test_sqlite_tables_of_a_new_database_never_reuse_ids(sqlite_app: norc.Norc) -> None:
    """A fresh SQLite database declares AUTOINCREMENT where logs are keyed by id, and has
    its installation row."""
    app = sqlite_app
    with app.db.reading() as conn:
        tables = dict(conn.execute(sa.text("SELECT name, sql FROM sqlite_master")).all())
        rows = conn.execute(sa.text("SELECT id, legacy_daemon_id FROM norc_installation")).all()
    assert "AUTOINCREMENT" in tables["norc_instances"]
    assert "AUTOINCREMENT" in tables["norc_daemons"]
    assert [(r.id, r.legacy_daemon_id) for r in rows] == [(app.log_keys.installation, None)]


def test_revision_0005_downgrades_on_sqlite(sqlite_url: str) -> None:
    """`0005 -> 0004` drops the installation row and rebuilds the tables without
    AUTOINCREMENT, rows kept."""
    from alembic import command

    from norc.store.connections import Connections

    db = Connections(sqlite_url)
    with db.engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "0005")
        for statement in _AT_0004:
            conn.execute(sa.text(statement))
        _instance_at_0004(conn, "QUEUED", started=False, log_key=None)
        conn.execute(
            sa.text(
                "INSERT INTO norc_queue_items (queue, priority, instance_id, enqueued_at)"
                " VALUES ('default', 0, 1, '2026-01-01 00:00:00')"
            )
        )
        command.downgrade(migrate.alembic_config(conn), "0004")
        tables = dict(conn.execute(sa.text("SELECT name, sql FROM sqlite_master")).all())
        items = conn.execute(sa.text("SELECT instance_id FROM norc_queue_items")).all()
    db.dispose()
    assert "norc_installation" not in tables
    assert "AUTOINCREMENT" not in tables["norc_instances"]
    assert [tuple(i) for i in items] == [(1,)]
