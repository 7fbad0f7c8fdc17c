"""The web API and page server: data from norc.reports, logs, controls, safety, pagination."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

import norc
from norc import reports
from norc.errors import ConfigurationError
from norc.jobs import Job
from norc.status import InstanceStatus
from norc.store.schema import instances as instances_table
from norc.testing import NoopTask, wait_until
from norc.web import create_app, serve
from norc.web.queries import read_chunk
from tests.tasks import Echo, Outcome, Sleep

LOCAL = {"base_url": "http://127.0.0.1:8000", "client": ("127.0.0.1", 40000)}


def local_client(app: norc.Norc, **options: Any) -> TestClient:
    """A client that looks like a browser on this machine talking to 127.0.0.1:8000."""
    return TestClient(create_app(app, **options), **LOCAL)  # type: ignore[arg-type]


def csrf(client: TestClient) -> dict[str, str]:
    """The CSRF header the page would send."""
    return {"X-Norc-CSRF": client.get("/api/session").json()["csrf_token"]}


def live_daemon(app: norc.Norc, kind: str = "executor") -> int:
    """A daemon row with a fresh heartbeat, as a running daemon would leave it."""
    return app.db.insert_daemon(
        kind=kind,
        host="web-test-host",
        pid=4242,
        queue="default" if kind == "executor" else None,
        concurrency=2 if kind == "executor" else None,
        status="RUNNING",
    )


@pytest.fixture
def web(app: norc.Norc) -> Iterator[TestClient]:
    """A local client on the ``app`` fixture's database, without credentials."""
    with local_client(app) as client:
        yield client


def _without_ages(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_ages(v) for k, v in data.items() if k != "heartbeat_age"}
    if isinstance(data, list):
        return [_without_ages(v) for v in data]
    return data


def test_overview_data_is_the_reports_data(app: norc.Norc, web: TestClient) -> None:
    """/api/status, /api/tasks, /api/queues, /api/schedules and daemon lists equal norc.reports."""
    app.save_task(Outcome(name="ok"))
    app.save_task(Outcome(name="bad", result=False))
    app.add_schedule("ok", cron="0 3 * * *")
    live_daemon(app, "executor")
    live_daemon(app, "scheduler")
    for name in ("ok", "bad", "ok"):
        app.enqueue(name)
    since = datetime.now(UTC) - timedelta(hours=1)

    got = web.get("/api/status", params={"since": since.isoformat()}).json()
    want = reports.jsonable(reports.status(app, since=since))
    assert _without_ages(got) == _without_ages(want)
    assert got["instances"]["QUEUED"] == 3
    assert [e["host"] for e in got["executors"]] == ["web-test-host"]

    tasks = web.get("/api/tasks", params={"since": since.isoformat()}).json()
    assert tasks == reports.jsonable(reports.tasks(app, since=since))
    assert web.get("/api/queues").json() == reports.jsonable(reports.queues(app))
    assert web.get("/api/schedules").json() == reports.jsonable(reports.schedules_(app))
    for kind in ("executor", "scheduler"):
        rows = web.get(f"/api/{kind}s").json()
        assert _without_ages(rows) == _without_ages(reports.jsonable(reports.daemons(app, kind)))


def test_instance_page_data_and_log(app: norc.Norc, web: TestClient) -> None:
    """An instance's record and its log (stdout, stderr and Norc's events) come through the API."""
    app.save_task(Echo(name="echo", message="web hello"))
    instance_id = app.enqueue("echo")
    with app.executor():
        wait_until(lambda: app.instance(instance_id).status.is_final, 30)
    record = app.instance(instance_id)

    body = web.get(f"/api/instances/{instance_id}").json()["instance"]
    assert body["status"] == "SUCCESS"
    assert {k: v for k, v in body.items() if k != "lateness"} == record.to_json()
    assert body["lateness"] is not None and body["lateness"] >= 0

    log = web.get(f"/api/instances/{instance_id}/log").json()
    assert "out: web hello" in log["text"] and "err: web hello" in log["text"]
    assert log["text"] == app.logs(instance_id)
    assert log["eof"] and log["final"] and log["source"] == "local"
    assert log["next_offset"] == log["size"]
    rest = web.get(f"/api/instances/{instance_id}/log", params={"offset": log["next_offset"]})
    assert rest.json()["text"] == ""
    tail = web.get(f"/api/instances/{instance_id}/log", params={"offset": -20}).json()
    assert log["text"].endswith(tail["text"]) and tail["offset"] == log["size"] - 20


def test_log_follows_a_growing_file_in_byte_chunks(sqlite_app: norc.Norc) -> None:
    """Polling with next_offset returns each new part once and never splits a UTF-8 character."""
    app = sqlite_app
    app.save_task(NoopTask(name="grow"))
    instance_id = app.enqueue("grow")
    path = app.log_path(app.instance(instance_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    with local_client(app) as web:
        assert web.get(f"/api/instances/{instance_id}/log").status_code == 404  # not yet
        path.write_bytes("first ä line\n".encode())
        first = web.get(f"/api/instances/{instance_id}/log").json()
        assert first["text"] == "first ä line\n" and not first["final"]
        with open(path, "ab") as f:
            f.write("second €\n".encode())
        second = web.get(
            f"/api/instances/{instance_id}/log", params={"offset": first["next_offset"]}
        ).json()
        assert second["text"] == "second €\n"
    # A chunk boundary inside "€" (3 bytes) stops before it; the next chunk starts with it.
    data = "ab€cd".encode()
    path.write_bytes(data)
    cut = read_chunk(path, lambda: "", offset=0, limit=4)
    assert cut["text"] == "ab" and cut["next_offset"] == 2 and not cut["eof"]
    after = read_chunk(path, lambda: "", offset=cut["next_offset"], limit=100)
    assert after["text"] == "€cd" and after["eof"]
    tail = read_chunk(path, lambda: "", offset=-4, limit=100)  # starts inside "€"
    assert tail["text"] == "cd" and tail["offset"] == 5


def test_log_endpoint_cannot_leave_the_log_store(
    sqlite_app: norc.Norc, tmp_path: Path, log_dir: Path
) -> None:
    """Ids are integers, and a stored key pointing outside the log directory is refused."""
    app = sqlite_app
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    app.save_task(NoopTask(name="sneaky"))
    instance_id = app.enqueue("sneaky")
    with app.db.transaction() as tx:
        tx.conn.execute(
            sa.update(instances_table)
            .where(instances_table.c.id == instance_id)
            .values(log_key="../secret.txt")
        )
    with local_client(app) as web:
        for url in (
            "/api/instances/..%2F..%2Fetc%2Fpasswd/log",
            "/api/instances/../../etc/passwd/log",
            "/api/instances/-1/log",
            "/api/instances/1.5/log",
            "/api/daemons/..%2Fsecret.txt/log",
            "/static/..%2F..%2F..%2Fapp.py",
        ):
            response = web.get(url)
            assert response.status_code in (404, 422), url
            assert "root:" not in response.text
        response = web.get(f"/api/instances/{instance_id}/log")
        assert response.status_code in (400, 404)
        assert "TOP SECRET" not in response.text
        assert "error" in response.json()


def test_instances_are_paginated_with_before_id(app: norc.Norc, web: TestClient) -> None:
    """Pages of `limit` rows, newest first, continue with next_before_id and end with None."""
    app.save_task(NoopTask(name="many"))
    ids = app.enqueue_many("many", 7)
    seen: list[int] = []
    before: int | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if before is not None:
            params["before_id"] = before
        page = web.get("/api/instances", params=params).json()
        seen += [i["id"] for i in page["instances"]]
        pages += 1
        before = page["next_before_id"]
        if before is None:
            break
    assert pages == 3
    assert seen == sorted(ids, reverse=True)


def test_instance_filters_by_status_group_task_and_time(app: norc.Norc, web: TestClient) -> None:
    """Status groups, task-name search, executor and time frame narrow the list."""
    app.save_task(NoopTask(name="alpha-job"))
    app.save_task(NoopTask(name="beta-job"))
    a = app.enqueue("alpha-job")
    b = app.enqueue("beta-job")
    with app.db.transaction() as tx:
        tx.conn.execute(
            sa.update(instances_table)
            .where(instances_table.c.id == b)
            .values(status="FAILURE", executor_id=99)
        )

    def ids(**params: Any) -> list[int]:
        response = web.get("/api/instances", params=params)
        assert response.status_code == 200, response.text
        return [i["id"] for i in response.json()["instances"]]

    assert ids(status="failed") == [b]
    assert ids(status="active") == [a]
    assert ids(status="FAILURE") == [b]
    assert ids(task="ALPHA") == [a]
    assert sorted(ids(task="job")) == [a, b]
    assert ids(executor=99) == [b]
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert ids(since=future) == []
    assert ids(since="10m", until=future) == [b, a]
    bad = web.get("/api/instances", params={"status": "sleepy"})
    assert bad.status_code == 400 and "sleepy" in bad.json()["error"]


def test_daemon_requests_change_the_daemon_row(app: norc.Norc, web: TestClient) -> None:
    """POST a request with the CSRF header: the daemon's `request` column is set."""
    ex = live_daemon(app)
    response = web.post(f"/api/daemons/{ex}/request", json={"request": "pause"}, headers=csrf(web))
    assert response.status_code == 200, response.text
    assert app.daemons()[0].request == "PAUSE"
    assert response.json()["daemon"]["request"] == "PAUSE"

    bad = web.post(f"/api/daemons/{ex}/request", json={"request": "DANCE"}, headers=csrf(web))
    assert bad.status_code == 400 and "DANCE" in bad.json()["error"]
    for body in ({"request": "STOP", "timeout": "soon"}, {"request": "STOP", "force": "yes"}):
        assert (
            web.post(f"/api/daemons/{ex}/request", json=body, headers=csrf(web)).status_code == 400
        )
    not_json = web.post(f"/api/daemons/{ex}/request", content=b"STOP", headers=csrf(web))
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]
    reload = web.post(f"/api/daemons/{ex}/request", json={"request": "RELOAD"}, headers=csrf(web))
    assert reload.status_code == 409 and "RELOAD is for schedulers" in reload.json()["error"]
    missing = web.post("/api/daemons/999/request", json={"request": "STOP"}, headers=csrf(web))
    assert missing.status_code == 404
    app.db.set_daemon(ex, status="ERROR", ended_at=datetime.now(UTC), request=None)
    ended = web.post(f"/api/daemons/{ex}/request", json={"request": "STOP"}, headers=csrf(web))
    assert ended.status_code == 409 and "already ended" in ended.json()["error"]
    handled = web.post(f"/api/daemons/{ex}/handle", headers=csrf(web))
    assert handled.status_code == 200 and app.daemons()[0].status == "HANDLED"

    sched = live_daemon(app, "scheduler")
    host = web.post(
        "/api/hosts/web-test-host/request", json={"request": "RELOAD"}, headers=csrf(web)
    )
    assert host.json()["daemons"] == [sched]
    assert next(d for d in app.daemons() if d.id == sched).request == "RELOAD"


def test_schedule_pause_resume_and_run_now(app: norc.Norc, web: TestClient) -> None:
    """Pausing and resuming set the schedule's paused flag; run-now enqueues an instance."""
    task = app.save_task(Outcome(name="timed"))
    s = app.add_schedule("timed", cron="*/5 * * * *")
    page = web.get(f"/api/schedules/{s.id}").json()
    assert len(page["next_fires"]) == 10 and page["schedule"]["state"] == "active"
    assert page["next_fires"][0] == s.next_fire_at.isoformat()  # type: ignore[union-attr]

    assert web.post(f"/api/schedules/{s.id}/pause", headers=csrf(web)).status_code == 200
    assert app.schedule(s.id).paused
    assert web.get(f"/api/schedules/{s.id}").json()["schedule"]["state"] == "paused"
    assert web.post(f"/api/schedules/{s.id}/resume", headers=csrf(web)).status_code == 200
    assert not app.schedule(s.id).paused
    assert web.post("/api/schedules/999/pause", headers=csrf(web)).status_code == 404

    run = web.post(f"/api/tasks/{task.id}/run", json={}, headers=csrf(web))
    assert run.status_code == 200, run.text
    instance_id = run.json()["instance_id"]
    assert app.instance(instance_id).status is InstanceStatus.QUEUED
    wrong_queue = web.post(f"/api/tasks/{task.id}/run", json={"queue": "nope"}, headers=csrf(web))
    assert wrong_queue.status_code == 404 and "nope" in wrong_queue.json()["error"]

    detail = web.get(f"/api/tasks/{task.id}").json()
    assert detail["task"]["name"] == "timed" and detail["schedules"][0]["id"] == s.id
    assert len(detail["schedules"][0]["next_fires"]) == 3


def test_handle_a_failed_instance(app: norc.Norc, web: TestClient) -> None:
    """Handling a failed instance marks it HANDLED; handling a queued one is a 409."""
    app.save_task(NoopTask(name="h"))
    queued, failed = app.enqueue_many("h", 2)
    with app.db.transaction() as tx:
        tx.conn.execute(
            sa.update(instances_table).where(instances_table.c.id == failed).values(status="ERROR")
        )
    ok = web.post(f"/api/instances/{failed}/handle", headers=csrf(web))
    assert ok.status_code == 200 and app.instance(failed).status is InstanceStatus.HANDLED
    refused = web.post(f"/api/instances/{queued}/handle", headers=csrf(web))
    assert refused.status_code == 409 and "not failed" in refused.json()["error"]


def diamond(app: norc.Norc, name: str = "diamond", task: str = "ok") -> Job:
    """A Job whose nodes ``a`` and ``b`` run ``task``, then ``c`` after both."""
    job = Job(name=name)
    a, b = job.add(task, name="a"), job.add(task, name="b")
    job.add(task, name="c", after=[a, b])
    app.save_task(job)
    return job


def test_job_run_is_the_job_nodes_report(app: norc.Norc, web: TestClient) -> None:
    """/api/jobs/ID is the Job run's instance and the rows of reports.job_nodes, unchanged."""
    app.save_task(Outcome(name="ok"))
    diamond(app)
    run = app.enqueue("diamond")
    with app.executor(concurrency=2):
        wait_until(lambda: app.instance(run).status.is_final, 60)

    response = web.get(f"/api/jobs/{run}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["job"] == "diamond"
    assert body["instance"] == app.instance(run).to_json()
    assert body["instance"]["status"] == "SUCCESS"
    assert body["nodes"] == reports.jsonable(reports.job_nodes(app, "diamond", instance_id=run))
    assert [n["node"] for n in body["nodes"]][-1] == "c"
    assert {n["node"]: n["status"] for n in body["nodes"]} == dict.fromkeys("abc", "SUCCESS")
    assert next(n for n in body["nodes"] if n["node"] == "c")["after"] in ("a, b", "b, a")
    for node in body["nodes"]:
        assert app.instance(node["instance"]).job_instance_id == run


def test_job_run_of_something_else_is_not_found(app: norc.Norc, web: TestClient) -> None:
    """An instance that is not a Job run, or no instance at all, is a 404 with a JSON error."""
    app.save_task(Outcome(name="ok"))
    plain = app.enqueue("ok")
    response = web.get(f"/api/jobs/{plain}")
    assert response.status_code == 404
    assert set(response.json()) == {"error"} and "not a Job run" in response.json()["error"]
    assert web.get("/api/jobs/98765").status_code == 404
    assert web.get("/api/jobs/abc").status_code == 404


def test_stop_an_instance_needs_csrf_and_skips_a_queued_one(
    app: norc.Norc, web: TestClient
) -> None:
    """POST /stop without the CSRF header changes nothing; with it QUEUED becomes SKIPPED."""
    app.save_task(NoopTask(name="waiting"))
    instance_id = app.enqueue("waiting")
    url = f"/api/instances/{instance_id}/stop"
    assert web.post(url).status_code == 403
    assert web.post(url, headers={"X-Norc-CSRF": "guess"}).status_code == 403
    assert web.get(url).status_code == 405
    assert app.instance(instance_id).status is InstanceStatus.QUEUED

    stopped = web.post(url, headers=csrf(web))
    assert stopped.status_code == 200, stopped.text
    assert stopped.json() == {"stopped": True}
    record = app.instance(instance_id)
    assert record.status is InstanceStatus.SKIPPED and record.error == "stopped from the web page"
    assert web.post(url, headers=csrf(web)).json() == {"stopped": False}  # ended already
    assert web.post("/api/instances/98765/stop", headers=csrf(web)).status_code == 404


def test_stop_a_running_job_run_ends_its_nodes(app: norc.Norc, web: TestClient) -> None:
    """Stopping a running Job run interrupts it; its nodes end and the page data shows it."""
    app.save_task(Sleep(name="nap", seconds=30))
    diamond(app, "sleepy", task="nap")
    run = app.enqueue("sleepy")
    with app.executor(concurrency=2):
        wait_until(
            lambda: (
                len(app.db.find_instances(job_instance_id=run, limit=None)) == 2
                and app.instance(run).status is InstanceStatus.RUNNING
            ),
            30,
        )
        before = web.get(f"/api/jobs/{run}").json()
        assert next(n for n in before["nodes"] if n["node"] == "c")["status"] == "PENDING"
        response = web.post(f"/api/instances/{run}/stop", headers=csrf(web))
        assert response.json() == {"stopped": True}
    answer = web.get(f"/api/jobs/{run}")
    assert answer.status_code == 200, answer.text
    after = answer.json()
    assert after["instance"]["status"] == "INTERRUPTED"
    statuses = {n["node"]: n["status"] for n in after["nodes"]}
    assert statuses["c"] == "SKIPPED"
    assert {statuses["a"], statuses["b"]} <= {"INTERRUPTED", "SKIPPED"}


def test_changes_need_the_csrf_header_a_post_and_the_same_origin(
    sqlite_app: norc.Norc,
) -> None:
    """Without X-Norc-CSRF, with a foreign Origin or cross-site fetch, or by GET: refused."""
    app = sqlite_app
    ex = live_daemon(app)
    url = f"/api/daemons/{ex}/request"
    with local_client(app) as web:
        good = csrf(web)
        assert web.post(url, json={"request": "PAUSE"}).status_code == 403
        wrong = web.post(url, json={"request": "PAUSE"}, headers={"X-Norc-CSRF": "guess"})
        assert wrong.status_code == 403
        foreign = web.post(
            url, json={"request": "PAUSE"}, headers={**good, "Origin": "http://evil.example"}
        )
        assert foreign.status_code == 403 and "Origin" in foreign.json()["error"]
        cross = web.post(
            url, json={"request": "PAUSE"}, headers={**good, "Sec-Fetch-Site": "cross-site"}
        )
        assert cross.status_code == 403
        assert web.get(url).status_code == 405
        assert app.daemons()[0].request is None
        same = web.post(
            url, json={"request": "PAUSE"}, headers={**good, "Origin": "http://127.0.0.1:8000"}
        )
        assert same.status_code == 200 and app.daemons()[0].request == "PAUSE"


def test_credentials_are_required_for_changes_when_configured(sqlite_app: norc.Norc) -> None:
    """With a token or user/password, a change without (or with wrong) credentials is a 401."""
    app = sqlite_app
    ex = live_daemon(app)
    url = f"/api/daemons/{ex}/request"
    basic = "Basic " + base64.b64encode(b"admin:pa55word").decode()
    wrong_basic = "Basic " + base64.b64encode(b"admin:nope").decode()
    with local_client(app, token="t0ken-for-tests", user="admin", password="pa55word") as web:
        headers = csrf(web)
        assert web.get("/api/status").status_code == 200  # local reads stay open
        anonymous = web.post(url, json={"request": "PAUSE"}, headers=headers)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        for auth in ("Bearer wrong-token", wrong_basic, "Digest x"):
            response = web.post(
                url, json={"request": "PAUSE"}, headers={**headers, "Authorization": auth}
            )
            assert response.status_code == 401, auth
        assert app.daemons()[0].request is None
        for auth in ("Bearer t0ken-for-tests", basic):
            response = web.post(
                url, json={"request": "PAUSE"}, headers={**headers, "Authorization": auth}
            )
            assert response.status_code == 200, auth
        assert app.daemons()[0].request == "PAUSE"
        no_csrf = web.post(
            url, json={"request": "PAUSE"}, headers={"Authorization": "Bearer t0ken-for-tests"}
        )
        assert no_csrf.status_code == 403  # credentials do not replace the CSRF header

    with local_client(app, token="t0ken-for-tests", require_auth=True) as web:
        assert web.get("/api/status").status_code == 401
        assert web.get("/api/session").status_code == 200  # how to authenticate
        ok = web.get("/api/status", headers={"Authorization": "Bearer t0ken-for-tests"})
        assert ok.status_code == 200


def test_anonymous_access_is_local_access_only(sqlite_app: norc.Norc) -> None:
    """Without credentials, a remote client or a foreign Host name (DNS rebinding) is refused."""
    app = sqlite_app
    ex = live_daemon(app)
    remote = TestClient(create_app(app), base_url="http://127.0.0.1:8000", client=("192.0.2.7", 1))
    assert remote.get("/api/status").status_code == 403
    assert remote.get("/api/session").status_code == 200
    headers = csrf(remote)
    assert (
        remote.post(
            f"/api/daemons/{ex}/request", json={"request": "STOP"}, headers=headers
        ).status_code
        == 403
    )
    rebound = TestClient(create_app(app), base_url="http://evil.example", client=("127.0.0.1", 1))
    assert rebound.get("/api/status").status_code == 403
    assert app.daemons()[0].request is None
    with_token = TestClient(
        create_app(app, token="t0ken-for-tests"),
        base_url="http://norc.example",
        client=("192.0.2.7", 1),
    )
    assert with_token.get("/api/status").status_code == 401
    authed = with_token.get("/api/status", headers={"Authorization": "Bearer t0ken-for-tests"})
    assert authed.status_code == 200


def test_read_only_refuses_every_change(app: norc.Norc) -> None:
    """A read-only server answers reads and refuses each control with 403, changing nothing."""
    task = app.save_task(NoopTask(name="ro"))
    s = app.add_schedule("ro", cron="@daily")
    ex = live_daemon(app)
    instance_id = app.enqueue("ro")
    with local_client(app, read_only=True) as web:
        assert web.get("/api/session").json()["read_only"] is True
        assert web.get("/api/status").status_code == 200
        headers = csrf(web)
        for url, body in (
            (f"/api/daemons/{ex}/request", {"request": "STOP"}),
            (f"/api/daemons/{ex}/handle", {}),
            ("/api/hosts/web-test-host/request", {"request": "STOP"}),
            (f"/api/schedules/{s.id}/pause", {}),
            (f"/api/schedules/{s.id}/resume", {}),
            (f"/api/tasks/{task.id}/run", {}),
            (f"/api/instances/{instance_id}/handle", {}),
            (f"/api/instances/{instance_id}/stop", {}),
        ):
            response = web.post(url, json=body, headers=headers)
            assert response.status_code == 403, url
            assert "read-only" in response.json()["error"]
    assert app.daemons()[0].request is None
    assert not app.schedule(s.id).paused
    assert len(app.instances()) == 1
    assert app.instance(instance_id).status is InstanceStatus.QUEUED


def test_serve_refuses_a_non_loopback_host_without_credentials(sqlite_app: norc.Norc) -> None:
    """serve() on 0.0.0.0 (or any non-loopback address) without auth raises before listening."""
    for host in ("0.0.0.0", "::", "192.0.2.1", "norc.example", ""):
        with pytest.raises(ConfigurationError, match="without authentication"):
            serve(sqlite_app, host=host, port=0)
    with pytest.raises(ConfigurationError, match="user and a password"):
        create_app(sqlite_app, user="admin")
    with pytest.raises(ConfigurationError, match="require_auth"):
        create_app(sqlite_app, require_auth=True)


def test_errors_are_json_never_tracebacks(
    sqlite_app: norc.Norc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown ids are 404, bad parameters 400, and an unexpected failure a bare JSON 500."""
    with local_client(sqlite_app) as web:
        for url, status in (
            ("/api/instances/12345", 404),
            ("/api/instances/12345/log", 404),
            ("/api/tasks/77", 404),
            ("/api/schedules/77", 404),
            ("/api/daemons/77", 404),
            ("/api/daemons/77/log", 404),
            ("/api/nothing-here", 404),
            ("/api/instances?since=yesterday-ish", 400),
            ("/api/instances?limit=zero", 400),
            ("/api/charts/instances?since=1h&until=2000-01-01T00:00:00", 400),
        ):
            response = web.get(url)
            assert response.status_code == status, url
            assert set(response.json()) == {"error"}, url

        def explode(*args: object, **kwargs: object) -> None:
            raise RuntimeError("secret internals")

        monkeypatch.setattr(reports, "status", explode)
        crashed = web.get("/api/status")
        assert crashed.status_code == 500
        assert "secret internals" not in crashed.text and "Traceback" not in crashed.text
        assert "error" in crashed.json()


def test_openapi_describes_every_route(sqlite_app: norc.Norc) -> None:
    """/api/openapi.json is an OpenAPI 3.1 document naming each API route and method."""
    from norc.web.api import ENDPOINTS

    with local_client(sqlite_app) as web:
        doc = web.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    for e in ENDPOINTS:
        path = e.path.replace(":id}", "}")
        assert e.method.lower() in doc["paths"][path], path
    post = doc["paths"]["/api/daemons/{daemon_id}/request"]["post"]
    assert any(p["name"] == "X-Norc-CSRF" for p in post["parameters"])


def test_page_and_static_files_are_served_with_a_strict_policy(sqlite_app: norc.Norc) -> None:
    """The page, its script and its styles come from Norc itself, with CSP and no framing."""
    with local_client(sqlite_app) as web:
        page = web.get("/")
        assert page.status_code == 200 and "static/app.js" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        for asset in ("/static/app.js", "/static/style.css"):
            assert web.get(asset).status_code == 200
        assert "no-store" in web.get("/api/status").headers["cache-control"]


def test_charts_count_instances_per_status_and_bucket(app: norc.Norc, web: TestClient) -> None:
    """The instances chart's buckets add up to the instances created in the window."""
    app.save_task(NoopTask(name="c"))
    app.enqueue_many("c", 4)
    chart = web.get("/api/charts/instances", params={"since": "10m", "buckets": 5}).json()
    assert len(chart["edges"]) == 6
    assert sum(chart["counts"]["QUEUED"]) == 4 and set(chart["counts"]) == {"QUEUED"}
    task = app.task_record("c")
    runs = web.get(f"/api/tasks/{task.id}/runs").json()["runs"]
    assert len(runs) == 4 and all(r["status"] == "QUEUED" for r in runs)
