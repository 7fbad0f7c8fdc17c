"""Alerts end to end: rules, events, the outbox, real SMTP and HTTP servers receiving."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import norc
from norc.alerts.channels import AlertError, Channel, Notification
from norc.alerts.delivery import deliver_due
from norc.status import InstanceStatus
from norc.store.schema import notifications, schedules
from norc.testing import free_port, run_started, wait_until
from tests.alert_servers import Hooks, Mailbox
from tests.tasks import Outcome, Sleep

FAST = {"NORC_HEARTBEAT_INTERVAL": "0.3", "NORC_HEARTBEAT_TIMEOUT": "3"}


@pytest.fixture
def fast(db_url: str, log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[norc.Norc]:
    """A handle on the backend's database whose daemons beat (and housekeep) every 0.3 s."""
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NORC_WEB_URL", "https://norc.example.com/")
    handle = norc.Norc(db_url, log_dir=log_dir)
    yield handle
    handle.close()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """A running SMTP server."""
    box = Mailbox().start()
    yield box
    box.stop()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    """A running HTTP server taking webhooks."""
    server = Hooks()
    yield server
    server.close()


def _rows(app: norc.Norc, event: str | None = None) -> list[sa.Row[tuple[object, ...]]]:
    query = sa.select(notifications).order_by(notifications.c.id)
    if event is not None:
        query = query.where(notifications.c.event == event)
    with app.db.reading() as conn:
        return list(conn.execute(query).all())


def _outage(app: norc.Norc, schedule_id: int, seconds: float) -> None:
    """Move a schedule's next fire into the past, as if no scheduler ran for a while."""
    with app.db.transaction() as tx:
        tx.conn.execute(
            sa.update(schedules)
            .where(schedules.c.id == schedule_id)
            .values(next_fire_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


def _final(app: norc.Norc, ids: list[int]) -> bool:
    return all(r.status.is_final for r in app.db.instances_by_id(ids))


def test_failure_mails_once_retries_are_exhausted_and_not_before(
    fast: norc.Norc, mailbox: Mailbox
) -> None:
    """A task failing its first attempt and its retry is mailed once, about the retry:
    task, instance, status, attempt, host, error, log tail and a link to its page."""
    app = fast
    app.save_task(Outcome(name="nightly", raise_="disk full", max_retries=1, retry_delay=0))
    app.add_alert("ops", on="failure", task="night*", email="ops@example.com", smtp=mailbox.url)
    first = app.enqueue("nightly")
    with app.executor(isolation="thread"):
        wait_until(
            lambda: (
                len(app.instances(task="nightly")) == 2
                and _final(app, [i.id for i in app.instances(task="nightly")])
            )
        )
        wait_until(lambda: mailbox.messages and _rows(app)[0].status == "sent")
    retry = next(i for i in app.instances(task="nightly") if i.id != first)
    assert retry.attempt == 2 and retry.status is InstanceStatus.FAILURE
    [row] = _rows(app)
    assert (row.event, row.instance_id, row.status) == ("failure", retry.id, "sent")
    [message] = mailbox.messages
    assert message["To"] == "ops@example.com"
    assert f"nightly instance {retry.id} FAILURE (attempt 2)" in message["Subject"]
    body = mailbox.bodies()[0]
    for text in (
        "Task:     nightly",
        f"Instance: {retry.id}",
        "Attempt:  2",
        "Host:",
        "disk full",
        f"https://norc.example.com/#/instance/{retry.id}",
        "RuntimeError: disk full",
    ):
        assert text in body


def test_success_and_recovered_post_the_documented_json(fast: norc.Norc, hooks: Hooks) -> None:
    """A success after a failure posts `recovered` (and `success`); the first success of
    a task that never failed posts `success` only. The body has the documented keys."""
    app = fast
    app.save_task(Outcome(name="sync", raise_="boom"))
    app.add_alert("chat", on=["success", "recovered"], task="sync", webhook=hooks.url)
    failed = app.enqueue("sync")
    with app.executor(isolation="thread"):
        wait_until(lambda: _final(app, [failed]))
        app.save_task(Outcome(name="sync"), replace=True)
        ok = app.enqueue("sync")
        wait_until(lambda: _final(app, [ok]))
        again = app.enqueue("sync")
        wait_until(lambda: len(hooks.events()) >= 3)
    assert [b["instance"]["id"] for b in hooks.events("recovered")] == [ok]
    assert sorted(b["instance"]["id"] for b in hooks.events("success")) == [ok, again]
    body = hooks.events("recovered")[0]
    assert {
        "version",
        "notification_id",
        "rule",
        "event",
        "title",
        "text",
        "instance",
        "daemon",
        "schedule_id",
        "details",
        "log_tail",
        "url",
        "created_at",
    } <= set(body)
    assert body["instance"]["status"] == "SUCCESS" and body["instance"]["task_name"] == "sync"
    assert body["url"] == f"https://norc.example.com/#/instance/{ok}"
    assert hooks.paths[0] == "/hooks/T0/B0/s3cr3t-token"


def test_missed_fires_after_scheduler_downtime(fast: norc.Norc, hooks: Hooks) -> None:
    """Fires that fell due while no scheduler ran are recorded SKIPPED, each a `missed`."""
    app = fast
    app.save_task(Outcome(name="tick"))
    s = app.add_schedule("tick", every=1)
    _outage(app, s.id, 20)
    app.add_alert("gaps", on="missed", schedule=s.id, webhook=hooks.url, rate_limit=0)
    with app.scheduler():
        wait_until(
            lambda: any(i.status is InstanceStatus.SKIPPED for i in app.instances(task="tick"))
        )
        skipped = [i.id for i in app.instances(task="tick") if i.status is InstanceStatus.SKIPPED]
        wait_until(lambda: {b["instance"]["id"] for b in hooks.events("missed")} >= set(skipped))
    assert skipped
    missed = [b["instance"]["id"] for b in hooks.events("missed")]
    assert sorted(missed) == sorted(set(missed))  # one each
    assert "make_up is off" in hooks.events("missed")[0]["text"]


def test_late_fire_is_alerted_with_no_executor_alive(fast: norc.Norc, hooks: Hooks) -> None:
    """A fire still queued a second after its fire time (no executor anywhere) is `late`,
    noticed by the scheduler's housekeeping from the database; one alert per fire."""
    app = fast
    app.save_task(Outcome(name="report"))
    s = app.add_schedule("report", every=3600)
    _outage(app, s.id, 0)
    app.add_alert("dead-man", on="late", task="report", webhook=hooks.url, late_after="1s")
    with app.scheduler():
        wait_until(lambda: hooks.events("late"))
        [instance] = app.instances(task="report")
        assert instance.status is InstanceStatus.QUEUED
    [body] = hooks.events("late")
    assert body["schedule_id"] == s.id
    assert len(_rows(app, "late")) == 1


def test_late_fire_is_alerted_with_no_scheduler_either(fast: norc.Norc, hooks: Hooks) -> None:
    """A fire no scheduler handled is `late` too: any daemon's housekeeping sees it."""
    app = fast
    app.save_task(Outcome(name="report"))
    s = app.add_schedule("report", every=3600)
    _outage(app, s.id, 5)
    app.add_alert("dead-man", on="late", webhook=hooks.url, late_after=2)
    with app.executor(queue="default", isolation="thread"):
        wait_until(lambda: hooks.events("late"))
    assert "did not start" in hooks.events("late")[0]["title"]


def test_silent_task_is_alerted_once_per_silence(fast: norc.Norc, hooks: Hooks) -> None:
    """No SUCCESS within the window gives one `silent`; a success starts a new window."""
    app = fast
    app.save_task(Outcome(name="backup", raise_="nope"))
    app.add_alert("quiet", on="silent", task="backup", webhook=hooks.url, within="1s")
    with app.executor(isolation="thread"):
        wait_until(lambda: hooks.events("silent"))
        app.save_task(Outcome(name="backup"), replace=True)
        ok = app.enqueue("backup")
        wait_until(lambda: _final(app, [ok]))
        wait_until(lambda: len(hooks.events("silent")) == 2)
    first, second = hooks.events("silent")
    assert first["details"]["last_success_instance"] is None
    assert second["details"]["last_success_instance"] == ok
    assert len(_rows(app, "silent")) == 2


def test_sigkilled_executor_is_alerted_as_a_dead_daemon(
    fast: norc.Norc, hooks: Hooks, db_url: str, log_dir: Path
) -> None:
    """A `norc executor` process killed with SIGKILL mid-run is settled by a survivor:
    a `daemon` event, and a `failure` for its run, INTERRUPTED with no retry."""
    app = fast
    app.save_task(Sleep(name="long", seconds=300))
    app.add_alert("daemons", on="daemon,failure", webhook=hooks.url)
    running = app.enqueue("long")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("norc")),
            "--db",
            db_url,
            "--log-dir",
            str(log_dir),
            "executor",
            "-q",
            "default",
        ],
        env={**os.environ, **FAST, "PYTHONPATH": os.pathsep.join(sys.path)},
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: run_started(app, running), timeout=60)
        victim = next(d.id for d in app.daemons("executor") if d.pid == proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with app.scheduler():
            wait_until(lambda: hooks.events("daemon") and hooks.events("failure"), timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    [body] = hooks.events("daemon")
    assert body["daemon"]["id"] == victim and body["daemon"]["status"] == "ERROR"
    [failure] = hooks.events("failure")
    assert failure["instance"]["id"] == running
    assert failure["instance"]["status"] == "INTERRUPTED"
    assert "stopped beating" in body["text"]


def test_each_notification_is_sent_exactly_once_by_three_handles(
    app: norc.Norc, db_url: str, log_dir: Path, hooks: Hooks
) -> None:
    """Three handles delivering the outbox at once send each notification exactly once."""
    app.alert_sender.stop()  # this test delivers by hand
    app.save_task(Outcome(name="flaky", raise_="x"))
    app.add_alert("all", on="failure", webhook=hooks.url, rate_limit=0)
    ids = [app.enqueue("flaky") for _ in range(30)]
    with app.executor(isolation="thread", concurrency=4):
        wait_until(lambda: _final(app, ids))
    wait_until(lambda: len(_rows(app, "failure")) == 30)
    handles = [norc.Norc(db_url, log_dir=log_dir) for _ in range(3)]
    start = threading.Barrier(3)

    def deliver(handle: norc.Norc) -> None:
        start.wait()
        deliver_due(handle)

    threads = [threading.Thread(target=deliver, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for h in handles:
        h.close()
    sent = [b["notification_id"] for b in hooks.events("failure")]
    assert sorted(sent) == sorted(int(r.id) for r in _rows(app, "failure"))
    assert sorted(b["instance"]["id"] for b in hooks.events("failure")) == sorted(ids)
    assert {r.status for r in _rows(app)} == {"sent"}


def test_mail_is_retried_while_the_smtp_server_is_down(app: norc.Norc) -> None:
    """Sends fail while the SMTP server is down (each attempt recorded with its error)
    and succeed once it is up."""
    app.alert_sender.stop()  # this test delivers by hand
    box = Mailbox(port=free_port())
    app.save_task(Outcome(name="t", raise_="x"))
    app.add_alert(
        "m", on="failure", email="a@example.com", smtp=box.url, options={"retry_delay": 0.05}
    )
    i = app.enqueue("t")
    with app.executor(isolation="thread"):
        wait_until(lambda: _final(app, [i]))
    wait_until(lambda: _rows(app))
    deliver_due(app)
    wait_until(lambda: deliver_due(app) == 0 and _rows(app)[0].attempts >= 2)
    [row] = _rows(app)
    assert row.status == "pending" and "Connection refused" in (row.last_error or "")
    box.start()
    try:
        wait_until(lambda: deliver_due(app) or _rows(app)[0].status == "sent")
        wait_until(lambda: box.messages)
    finally:
        box.stop()
    [record] = app.alert_history()
    assert record.status == "sent" and record.attempts >= 3 and record.sent_at is not None


def test_webhook_answering_500_is_retried(app: norc.Norc) -> None:
    """A webhook answering 500 is an attempt that failed; the next one is delivered."""
    app.alert_sender.stop()  # this test delivers by hand
    server = Hooks(fail=1)
    try:
        app.add_alert("w", on="failure", webhook=server.url, options={"retry_delay": 0.05})
        app.save_task(Outcome(name="t", raise_="x"))
        i = app.enqueue("t")
        with app.executor(isolation="thread"):
            wait_until(lambda: _final(app, [i]))
        wait_until(lambda: _rows(app))
        wait_until(lambda: deliver_due(app) == 1)
        [record] = app.alert_history()
        assert record.status == "sent" and record.attempts == 2
        assert len(server.events()) == 1
    finally:
        server.close()


def test_rate_limit_folds_the_rest_into_one_summary(app: norc.Norc, hooks: Hooks) -> None:
    """Over its rate, a rule's notifications are held back and counted in one summary
    sent at the end of the minute: 3 sent, then 1 summary naming the other 7."""
    app.alert_sender.stop()  # this test delivers by hand
    app.save_task(Outcome(name="storm", raise_="x"))
    app.add_alert("storm", on="failure", webhook=hooks.url, rate_limit=3)
    ids = [app.enqueue("storm") for _ in range(10)]
    with app.executor(isolation="thread", concurrency=2):
        wait_until(lambda: _final(app, ids))
    wait_until(lambda: len(_rows(app, "failure")) == 10)
    assert deliver_due(app) == 3
    statuses = sorted(r.status for r in _rows(app, "failure"))
    assert statuses == ["sent"] * 3 + ["suppressed"] * 7
    [summary] = _rows(app, "summary")
    assert summary.status == "pending"
    assert deliver_due(app, now=summary.next_attempt_at + timedelta(seconds=1)) == 1
    [body] = hooks.events("summary")
    assert body["details"]["suppressed"] == 7 and "7 more" in body["title"]
    assert len(hooks.events("failure")) == 3


def test_smtp_login_works_and_the_password_is_never_shown(
    app: norc.Norc, db_url: str, log_dir: Path
) -> None:
    """The SMTP URL's user/password log in; `alert list`, `--json`, the history and the
    CLI's output (a failed test included) never show the password."""
    box = Mailbox(users={"norc": "hunter2-secret"}).start()
    try:
        url = f"smtp://norc:hunter2-secret@127.0.0.1:{box.port}"
        app.add_alert("mail", on="failure", email="a@example.com", smtp=url)
        bad = f"smtp://norc:wrong-secret-pw@127.0.0.1:{box.port}"
        app.add_alert("badmail", on="failure", email="a@example.com", smtp=bad)
        norc_cmd = [
            str(Path(sys.executable).with_name("norc")),
            "--db",
            db_url,
            "--log-dir",
            str(log_dir),
        ]
        ok = subprocess.run([*norc_cmd, "alert", "test", "mail"], capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
        assert box.logins == ["norc"] and box.messages
        failed = subprocess.run(
            [*norc_cmd, "alert", "test", "badmail"], capture_output=True, text=True
        )
        assert failed.returncode == 2
        assert len(failed.stderr.strip().splitlines()) >= 1
        listed = subprocess.run([*norc_cmd, "alert", "list"], capture_output=True, text=True)
        as_json = subprocess.run(
            [*norc_cmd, "alert", "list", "--json"], capture_output=True, text=True
        )
        history = subprocess.run(
            [*norc_cmd, "alert", "history", "--json"], capture_output=True, text=True
        )
        assert "norc:***@127.0.0.1" in listed.stdout
        assert {r["name"] for r in json.loads(as_json.stdout)} == {"mail", "badmail"}
        assert [r["status"] for r in json.loads(history.stdout)] == ["failed", "sent"]
        everything = "".join(
            p.stdout + p.stderr for p in (ok, failed, listed, as_json, history)
        ) + "".join(f.read_text(errors="replace") for f in log_dir.rglob("*") if f.is_file())
        assert "hunter2" not in everything and "wrong-secret" not in everything
    finally:
        box.stop()


def test_webhook_secret_path_is_hidden_from_the_list(app: norc.Norc, hooks: Hooks) -> None:
    """A webhook's path (often its token) is not shown by `alert list`."""
    from norc.alerts.manage import describe

    app.add_alert("w", on="failure", webhook=hooks.url, format="slack")
    [shown] = [describe(app, r) for r in app.alerts()]
    assert "s3cr3t" not in json.dumps(shown) and shown["destination"].endswith("(slack)")


def test_slack_format_posts_text_and_blocks(app: norc.Norc, hooks: Hooks) -> None:
    """`--format slack` posts Slack's text/blocks shape."""
    app.add_alert("s", on="failure", webhook=hooks.url, format="slack")
    app.test_alert("s")
    [body] = hooks.bodies
    assert "test notification" in body["text"]
    assert [b["type"] for b in body["blocks"]] == ["header", "section"]


def test_bad_rules_are_refused_with_one_line(app: norc.Norc, tmp_path: Path) -> None:
    """Unknown events, two destinations, a silent rule without a window: refused."""
    with pytest.raises(AlertError, match="unknown event"):
        app.add_alert("x", on="fail", email="a@b.c")
    with pytest.raises(AlertError, match="exactly one destination"):
        app.add_alert("x", on="failure", email="a@b.c", webhook="http://h/")
    with pytest.raises(AlertError, match="needs a window"):
        app.add_alert("x", on="silent", email="a@b.c")
    with pytest.raises(AlertError, match="not a duration"):
        app.add_alert("x", on="silent", email="a@b.c", within="forever")
    with pytest.raises(AlertError, match="http"):
        app.add_alert("x", on="failure", webhook="ftp://h/")
    app.add_alert("x", on="failure", email="a@b.c")
    with pytest.raises(AlertError, match="exists"):
        app.add_alert("x", on="failure", email="a@b.c")
    app.remove_alert("x")
    with pytest.raises(AlertError, match="no alert named"):
        app.remove_alert("x")
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    cli = [str(Path(sys.executable).with_name("norc")), "--db", db]
    for args in (
        ["alert", "add", "x", "--on", "failure"],
        ["alert", "add", "x", "--on", "nope", "--email", "a@b.c"],
        ["alert", "add", "x", "--on", "silent", "--email", "a@b.c", "--within", "zz"],
        ["alert", "remove", "ghost"],
    ):
        done = subprocess.run([*cli, *args], capture_output=True, text=True)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, args


class Recorder(Channel):
    """A third-party channel: keeps what it is given."""

    channel_name = "recorder"
    received: list[Notification] = []

    def send(self, notification: Notification) -> None:
        Recorder.received.append(notification)


class RecorderPlugin:
    """Registers :class:`Recorder` through the channel hook, as a plugin would."""

    @norc.hookimpl
    def norc_register_channels(self, registry: object) -> None:
        registry.add_channel_type(Recorder)  # type: ignore[attr-defined]


def test_a_plugin_channel_receives_notifications(sqlite_url: str, log_dir: Path) -> None:
    """A channel registered by a plugin's norc_register_channels is usable by rules."""
    Recorder.received = []
    with norc.Norc(sqlite_url, log_dir=log_dir, plugins=[RecorderPlugin()]) as app:
        app.alert_sender.stop()  # this test delivers by hand
        assert app.registry.channels.owners["recorder"] == "RecorderPlugin-0"
        app.add_alert("r", on="failure", channel="recorder", target="anything")
        app.save_task(Outcome(name="t", raise_="x"))
        i = app.enqueue("t")
        with app.executor(isolation="thread"):
            wait_until(lambda: _final(app, [i]))
        wait_until(lambda: deliver_due(app) == 1)
    [notification] = Recorder.received
    assert notification.data["instance"]["id"] == i and notification.data["event"] == "failure"


def test_without_rules_the_executor_never_touches_the_outbox(sqlite_app: norc.Norc) -> None:
    """With no rule, recording outcomes writes and reads no notification row."""
    app = sqlite_app
    app.save_task(Outcome(name="ok"))  # creates the schema first
    app.save_task(Outcome(name="bad", raise_="x"))
    statements: list[str] = []
    sa.event.listen(
        app.db.engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *args: statements.append(statement),
    )
    ids = [app.enqueue("ok") for _ in range(50)] + [app.enqueue("bad") for _ in range(50)]
    with app.executor(isolation="thread", concurrency=4):
        wait_until(lambda: _final(app, ids))
    assert not [s for s in statements if "norc_notifications" in s]
    assert _rows(app) == []


def test_the_web_api_lists_rules_without_secrets_and_the_history(
    sqlite_app: norc.Norc, hooks: Hooks
) -> None:
    """/api/alerts shows destinations without password or webhook path; /api/alerts/history
    the notifications."""
    from tests.test_web import local_client

    app = sqlite_app
    app.add_alert("mail", on="failure", email="a@example.com", smtp="smtp://u:pa55word@h:25")
    app.add_alert("hook", on="failure", webhook=hooks.url)
    app.test_alert("hook")
    with local_client(app) as web:
        rules = web.get("/api/alerts")
        history = web.get("/api/alerts/history", params={"limit": 5})
    assert rules.status_code == 200 and {r["name"] for r in rules.json()} == {"mail", "hook"}
    assert "pa55word" not in rules.text and "s3cr3t" not in rules.text
    [sent] = history.json()
    assert (sent["rule"], sent["event"], sent["status"]) == ("hook", "test", "sent")


def test_three_live_daemons_send_each_notification_once(
    fast: norc.Norc, db_url: str, log_dir: Path, hooks: Hooks
) -> None:
    """Three executors, each on a handle of its own, all housekeeping and sending at
    once: every notification reaches the webhook exactly once."""
    app = fast
    app.alert_sender.stop()  # the outbox is filled first, then sent by the three
    app.save_task(Outcome(name="flaky", raise_="x"))
    app.add_alert("all", on="failure", webhook=hooks.url, rate_limit=0)
    ids = [app.enqueue("flaky") for _ in range(40)]
    with app.executor(isolation="thread", concurrency=4):
        wait_until(lambda: _final(app, ids))
    wait_until(lambda: len(_rows(app, "failure")) == 40)
    app.create_queue("idle")
    handles = [norc.Norc(db_url, log_dir=log_dir) for _ in range(3)]
    executors = [h.executor(queue="idle", isolation="thread").start() for h in handles]
    try:
        wait_until(lambda: {r.status for r in _rows(app)} == {"sent"})
    finally:
        for executor in executors:
            executor.stop()
            executor.wait()
        for h in handles:
            h.close()
    sent = sorted(b["notification_id"] for b in hooks.events("failure"))
    assert sent == sorted(int(r.id) for r in _rows(app, "failure"))
    assert [r.attempts for r in _rows(app)] == [1] * 40


def test_smtp_login_from_the_environment(
    sqlite_app: norc.Norc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a user in the SMTP URL, NORC_SMTP_USER/NORC_SMTP_PASSWORD log in."""
    box = Mailbox(users={"envuser": "env-pw"}).start()
    try:
        monkeypatch.setenv("NORC_SMTP_USER", "envuser")
        monkeypatch.setenv("NORC_SMTP_PASSWORD", "env-pw")
        sqlite_app.add_alert("m", on="failure", email="a@example.com", smtp=box.url)
        sqlite_app.test_alert("m")
        assert box.logins == ["envuser"] and len(box.messages) == 1
        monkeypatch.setenv("NORC_SMTP_PASSWORD", "not-env-pw")
        with pytest.raises(AlertError, match="test notification failed") as failed:
            sqlite_app.test_alert("m")
        assert "not-env-pw" not in str(failed.value)
    finally:
        box.stop()


def test_a_failed_job_alerts_for_its_node_and_for_itself(app: norc.Norc, hooks: Hooks) -> None:
    """A Job whose node fails ends FAILURE: one `failure` for the node, one for the Job."""
    from norc.jobs import Job

    app.save_task(Outcome(name="step-ok"))
    app.save_task(Outcome(name="step-bad", raise_="broken"))
    job = Job(name="etl")
    first = job.add("step-ok")
    job.add("step-bad", after=[first])
    app.save_task(job)
    app.add_alert("etl", on="failure", task="*", webhook=hooks.url)
    run = app.enqueue("etl")
    with app.executor(isolation="thread"):
        wait_until(lambda: app.instance(run).status.is_final)
        wait_until(lambda: len(hooks.events("failure")) == 2)
    by_task = {b["instance"]["task_name"]: b for b in hooks.events("failure")}
    assert set(by_task) == {"etl", "step-bad"}
    assert by_task["etl"]["instance"]["status"] == "FAILURE"
    assert by_task["etl"]["instance"]["id"] == run


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (made with openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_mail_over_tls(sqlite_app: norc.Norc, certificate: tuple[Path, Path], mode: str) -> None:
    """STARTTLS (`?starttls=1`) and SMTPS reach a server whose certificate the rule's
    `cafile` trusts; a server that requires STARTTLS refuses a plain client."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    box = Mailbox(**{"starttls" if mode == "starttls" else "implicit_tls": context}).start()
    try:
        if mode == "starttls":
            url = f"smtp://127.0.0.1:{box.port}?starttls=1&cafile={cert}"
            sqlite_app.add_alert("plain", on="failure", email="a@example.com", smtp=box.url)
            with pytest.raises(AlertError, match="test notification failed"):
                sqlite_app.test_alert("plain")
        else:
            url = f"smtps://127.0.0.1:{box.port}?cafile={cert}"
        sqlite_app.add_alert("tls", on="failure", email="a@example.com", smtp=url)
        sqlite_app.test_alert("tls")
        assert len(box.messages) == 1
    finally:
        box.stop()
