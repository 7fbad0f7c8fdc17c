"""The web API's robustness: every bad input is a 4xx naming it, no secret leaks anywhere."""

from __future__ import annotations

import io
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

import norc
from norc import reports
from norc.daemon import configure_stderr_logging
from norc.errors import DatabaseUnreachable
from norc.store.schema import instances as instances_table
from norc.testing import NoopTask
from norc.web import create_app, server
from norc.web.api import ENDPOINTS
from norc.web.openapi import openapi_document
from norc.web.security import mask_url_passwords
from norc.web.server import served_hosts
from tests.test_web import csrf, live_daemon, local_client

HUGE = str(2**63)  # one above the largest BIGINT


def _fill(path: str, value: str) -> str:
    return (
        path.replace("{task_id:id}", value)
        .replace("{schedule_id:id}", value)
        .replace("{instance_id:id}", value)
        .replace("{daemon_id:id}", value)
        .replace("{host}", "h")
    )


def test_ids_out_of_range_are_not_found_on_every_id_route(app: norc.Norc) -> None:
    """Above 2**63 - 1, zero, negative, too long or not a number: 404 on every id route."""
    with local_client(app) as web:
        headers = csrf(web)
        id_routes = [e for e in ENDPOINTS if ":id}" in e.path]
        assert len(id_routes) >= 15
        for e in id_routes:
            for bad in (HUGE, str(2**64), "9" * 30, "9" * 5000, "0", "-1", "abc", "1.5", "1e3"):
                url = _fill(e.path, bad)
                if e.method == "GET":
                    response = web.get(url)
                else:
                    response = web.post(url, json={"request": "STOP"}, headers=headers)
                    if "request" not in str(e.body_schema):
                        response = web.post(url, json={}, headers=headers)
                assert response.status_code == 404, (url, response.text)
                assert set(response.json()) == {"error"}


@pytest.mark.parametrize(
    ("url", "field"),
    [
        (f"/api/instances?task_id={HUGE}", "task_id"),
        (f"/api/instances?executor={HUGE}", "executor"),
        (f"/api/instances?schedule=-{HUGE}", "schedule"),
        (f"/api/instances?before_id={HUGE}", "before_id"),
        ("/api/instances?before_id=0", "before_id"),
        ("/api/instances?limit=0", "limit"),
        ("/api/instances?limit=501", "limit"),
        ("/api/instances?limit=1_0", "limit"),
        ("/api/instances?limit=%201", "limit"),
        ("/api/executors?limit=0", "limit"),
        ("/api/charts/instances?buckets=0", "buckets"),
        ("/api/charts/instances?buckets=121", "buckets"),
        ("/api/instances/1/log?limit=0", "limit"),
        (f"/api/instances/1/log?offset={2**64}", "offset"),
        ("/api/instances?queue=a%00b", "queue"),
        ("/api/instances?task=%1b[31m", "task"),
        ("/api/schedules?task=" + "x" * 300, "task"),
        ("/api/status?since=1h%00", "since"),
        ("/api/status?since=%091h", "since"),
        ("/api/status?since=1%0Ah", "since"),
        ("/api/status?other=%00", "other"),
    ],
)
def test_bad_query_parameters_are_400_naming_them(
    sqlite_app: norc.Norc, url: str, field: str
) -> None:
    """Out-of-range integers, control characters and overlong strings: 400 naming the field."""
    with local_client(sqlite_app) as web:
        response = web.get(url)
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]


def test_empty_query_parameters_are_the_defaults(app: norc.Norc) -> None:
    """`since=`, `status=` are schema-valid and mean 'not given'; far times clamp; RFC 3339
    times parse; an empty integer (`limit=`) is not an integer."""
    with local_client(app) as web:
        for url in (
            "/api/status?since=",
            "/api/executors?since=",
            "/api/instances?since=&until=&task=&queue=&status=",
            "/api/charts/instances?since=",
            "/api/tasks?since=",
            "/api/status?since=2000-01-01t00:00:00z",
            "/api/status?since=2016-12-31T23:59:60Z",
            "/api/status?since=0000-01-01T00:00:00Z",
            "/api/status?since=2000-01-01",
            "/api/status?since=%2010M%20",
            # Times beyond what databases store are clamped to 1970..9999, not a 500.
            "/api/status?since=99999999999999999w",
            "/api/status?since=" + "9" * 60 + "w",
            "/api/instances?since=9999-12-31T23:59:59-14:00",
            "/api/tasks?since=9999-12-31T23:59:59.999999-14:00",
            "/api/instances?since=0001-01-01T00:00:00-01:00&until=0001-01-01T00:00:00",
            "/api/executors?since=0001-01-01T00:00:00%2B01:00",
            "/api/charts/instances?since=0001-01-01&until=9999-12-31&buckets=120",
        ):
            assert web.get(url).status_code == 200, url
        for url in (
            "/api/executors?limit=",
            "/api/instances?before_id=",
            "/api/charts/instances?buckets=",
        ):
            response = web.get(url)
            assert response.status_code == 400 and "integer" in response.json()["error"], url
        assert web.get("/api/instances?limit=1").status_code == 200
        assert web.get("/api/instances?limit=500").status_code == 200
        assert web.get("/api/charts/instances?buckets=120").status_code == 200


def _run_url(app: norc.Norc) -> str:
    task = app.save_task(NoopTask(name="bodies"))
    return f"/api/tasks/{task.id}/run"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"priority": False}, "priority"),
        ({"priority": 99999999999}, "priority"),
        ({"priority": -(2**31) - 1}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"priority": "1"}, "priority"),
        ({"queue": 5}, "queue"),
        ({"queue": "a\x00b"}, "queue"),
        ({"queue": "a\nb"}, "queue"),
        ({"queue": "\ud800"}, "queue"),
        ({"queue": "q" * 256}, "queue"),
        ({"wait": {}}, "wait"),
    ],
)
def test_run_now_refuses_wrong_body_types(app: norc.Norc, body: Any, field: str) -> None:
    """`priority: false`, a priority beyond INTEGER, a NUL in `queue`: 400 naming the field."""
    url = _run_url(app)
    with local_client(app) as web:
        headers = {**csrf(web), "Content-Type": "application/json"}
        response = web.post(url, content=json.dumps(body), headers=headers)
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]
    assert app.instances() == []


def test_run_now_accepts_the_bounds(app: norc.Norc) -> None:
    """The extreme priorities are stored; an empty queue is the default queue."""
    url = _run_url(app)
    with local_client(app) as web:
        headers = csrf(web)
        for body in ({"priority": 2**31 - 1}, {"priority": -(2**31)}, {"queue": ""}, {}):
            response = web.post(url, json=body, headers=headers)
            assert response.status_code == 200, (body, response.text)
    assert len(app.instances()) == 4


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "request"),
        ({"request": "EXPLODE"}, "request"),
        ({"request": 1}, "request"),
        ({"request": "STOP", "wait": {}}, "wait"),
        ({"request": "STOP", "force": "yes"}, "force"),
        ({"request": "STOP", "timeout": 0}, "timeout"),
        ({"request": "STOP", "timeout": 16}, "timeout"),
        ({"request": "STOP", "timeout": True}, "timeout"),
        ({"request": "STOP", "extra": 1}, "extra"),
    ],
)
def test_daemon_requests_refuse_wrong_bodies(sqlite_app: norc.Norc, body: Any, field: str) -> None:
    """The daemon and host request bodies are checked against their schema."""
    ex = live_daemon(sqlite_app)
    with local_client(sqlite_app) as web:
        headers = csrf(web)
        for url in (f"/api/daemons/{ex}/request", "/api/hosts/web-test-host/request"):
            response = web.post(url, json=body, headers=headers)
            assert response.status_code == 400, (url, response.text)
            assert field in response.json()["error"]
    assert sqlite_app.daemons()[0].request is None


def test_bodiless_changes_refuse_any_field_and_non_json(sqlite_app: norc.Norc) -> None:
    """Pause, resume, stop, handle take no fields: `{"wait": {}}` is a 400; so are NaN, lists."""
    app = sqlite_app
    app.save_task(NoopTask(name="nobody"))
    s = app.add_schedule("nobody", cron="@daily")
    instance_id = app.enqueue("nobody")
    ex = live_daemon(app)
    with local_client(app) as web:
        headers = {**csrf(web), "Content-Type": "application/json"}
        for url in (
            f"/api/schedules/{s.id}/pause",
            f"/api/schedules/{s.id}/resume",
            f"/api/instances/{instance_id}/stop",
            f"/api/instances/{instance_id}/handle",
            f"/api/daemons/{ex}/handle",
        ):
            response = web.post(url, json={"wait": {}}, headers=headers)
            assert response.status_code == 400 and "wait" in response.json()["error"], url
            for raw in ("[]", "NaN", '{"a": NaN}', "{", '"x"'):
                response = web.post(url, content=raw, headers=headers)
                assert response.status_code == 400, (url, raw)
        big = web.post(f"/api/schedules/{s.id}/pause", content=b" " * 70000, headers=headers)
        assert big.status_code == 413
        ok = web.post(f"/api/schedules/{s.id}/pause", json={}, headers=headers)
        assert ok.status_code == 200
    assert app.instance(instance_id).status.value == "QUEUED"


def test_host_with_control_characters_is_refused(sqlite_app: norc.Norc) -> None:
    """A host path parameter with a NUL byte is a 400 naming it."""
    with local_client(sqlite_app) as web:
        response = web.post("/api/hosts/a%00b/request", json={"request": "STOP"}, headers=csrf(web))
    assert response.status_code == 400 and "host" in response.json()["error"]


def test_openapi_states_bounds_and_formats() -> None:
    """Ids, limits, buckets, priorities and strings carry their minimum, maximum and format."""
    doc = openapi_document()
    paths = doc["paths"]
    task_id = paths["/api/tasks/{task_id}"]["get"]["parameters"][0]["schema"]
    assert task_id == {
        "type": "integer",
        "format": "int64",
        "minimum": 1,
        "maximum": 2**63 - 1,
    }
    params = {p["name"]: p["schema"] for p in paths["/api/instances"]["get"]["parameters"]}
    assert {"format": "date-time", "type": "string", "maxLength": 64} in params["since"]["anyOf"]
    assert "failed" in params["status"]["enum"] and "TIMEDOUT" in params["status"]["enum"]
    assert params["limit"]["minimum"] == 1 and params["limit"]["maximum"] == 500
    assert params["before_id"]["maximum"] == 2**63 - 1
    assert params["queue"]["maxLength"] == 255 and "pattern" in params["queue"]
    chart = paths["/api/charts/instances"]["get"]["parameters"]
    assert {p["name"]: p["schema"] for p in chart}["buckets"]["maximum"] == 120
    run = paths["/api/tasks/{task_id}/run"]["post"]["requestBody"]["content"]
    priority = run["application/json"]["schema"]["properties"]["priority"]
    assert priority["minimum"] == -(2**31) and priority["maximum"] == 2**31 - 1
    for path, methods in paths.items():
        for method, op in methods.items():
            if method == "post":
                body = op["requestBody"]["content"]["application/json"]["schema"]
                assert body["additionalProperties"] is False, path


# -- secrets -------------------------------------------------------------------------------

TOKEN = "t0ken-never-printed"
PASSWORD = "pa55-never-printed"


def test_the_guard_repr_hides_its_secrets(sqlite_app: norc.Norc) -> None:
    """Guard's token, password and CSRF token are not in its repr (nor the app's state)."""
    web = create_app(sqlite_app, token=TOKEN, user="admin", password=PASSWORD)
    guard = web.state.guard
    text = repr(guard) + repr(web.state._state)
    assert TOKEN not in text and PASSWORD not in text and guard.csrf_token not in text
    assert "admin" in repr(guard)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_crash_is_logged_without_locals_or_secrets(
    sqlite_app: norc.Norc, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """An authenticated 500 logs its traceback, but no locals, token, CSRF token or URL password."""
    out = io.StringIO()
    configure_stderr_logging(fmt, out)  # type: ignore[arg-type]
    try:

        def explode(app: norc.Norc, **kwargs: object) -> None:
            secret_local = PASSWORD  # noqa: F841 (a local a locals-printing traceback shows)
            raise RuntimeError("cannot reach postgresql://norc:hunter2@db.example/norc")

        monkeypatch.setattr(reports, "status", explode)
        with local_client(sqlite_app, token=TOKEN, user="admin", password=PASSWORD) as web:
            csrf_token = web.get("/api/session").json()["csrf_token"]
            auth = {"Authorization": f"Bearer {TOKEN}"}
            crashed = web.get("/api/status", headers=auth)
            assert crashed.status_code == 500
            assert "hunter2" not in crashed.text and "RuntimeError" not in crashed.text
            monkeypatch.setattr(server, "FileResponse", explode)
            page = web.get("/", headers=auth)  # outside the API: the catch-all middleware
            assert page.status_code == 500 and set(page.json()) == {"error"}
    finally:
        structlog.reset_defaults()
    logged = out.getvalue()
    assert logged.count("web API request failed") == 2
    assert "RuntimeError" in logged and "explode" in logged  # the traceback is there
    assert "postgresql://norc:***@db.example/norc" in logged
    for secret in (TOKEN, PASSWORD, csrf_token, "hunter2"):
        assert secret not in logged


def test_error_messages_mask_url_passwords(
    sqlite_app: norc.Norc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Norc error quoting a database URL reaches the client with the password masked."""

    def unreachable(app: norc.Norc, **kwargs: object) -> None:
        raise DatabaseUnreachable("postgresql://norc:hunter2@db.example/norc", "refused")

    monkeypatch.setattr(reports, "status", unreachable)
    with local_client(sqlite_app) as web:
        response = web.get("/api/status")
    assert response.status_code == 503
    assert "hunter2" not in response.text and "norc:***@db.example" in response.text


def test_mask_url_passwords() -> None:
    assert mask_url_passwords("a mysql+pymysql://u:p%40ss@h:3306/d b") == (
        "a mysql+pymysql://u:***@h:3306/d b"
    )
    assert mask_url_passwords("postgresql://u@h/d and http://h:80/x") == (
        "postgresql://u@h/d and http://h:80/x"
    )


# -- Host ----------------------------------------------------------------------------------


def test_session_and_changes_refuse_a_foreign_host(sqlite_app: norc.Norc) -> None:
    """The CSRF token goes only to loopback names, IP addresses and the allowed hosts."""
    app = sqlite_app
    ex = live_daemon(app)
    for base in ("http://evil.example", "http://127.0.0.1.evil.example:8000"):
        foreign = TestClient(create_app(app, token=TOKEN), base_url=base, client=("127.0.0.1", 1))
        response = foreign.get("/api/session")
        assert response.status_code == 403, base
        assert "csrf" not in response.text.lower() and "Host" in response.json()["error"]
        refused = foreign.post(
            f"/api/daemons/{ex}/request",
            json={"request": "STOP"},
            headers={"Authorization": f"Bearer {TOKEN}", "X-Norc-CSRF": "x"},
        )
        assert refused.status_code == 403 and "Host" in refused.json()["error"]
    assert app.daemons()[0].request is None
    for base, allowed in (
        ("http://127.0.0.1:8000", ()),
        ("http://localhost:8000", ()),
        ("http://[::1]:8000", ()),
        ("http://192.0.2.1:8000", ()),
        ("http://norc.example", ("norc.example",)),
        ("http://NORC.example.:9000", ("norc.example",)),
        ("http://anything.example", ("*",)),
    ):
        client = TestClient(
            create_app(app, token=TOKEN, allowed_hosts=allowed),
            base_url=base,
            client=("127.0.0.1", 1),
        )
        assert "csrf_token" in client.get("/api/session").json(), base


def test_serve_answers_to_its_own_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve() allows the name it listens on, the machine's names on a wildcard, and the env."""
    monkeypatch.setenv("NORC_WEB_ALLOWED_HOSTS", "a.example, b.example")
    assert served_hosts("norc.example") == {"norc.example", "a.example", "b.example"}
    assert served_hosts("0.0.0.0", ["c.example"]) == {
        "c.example",
        socket.gethostname(),
        socket.getfqdn(),
    }


# -- logs ----------------------------------------------------------------------------------


def _instance_with_log(app: norc.Norc, name: str) -> tuple[int, Path]:
    app.save_task(NoopTask(name=name))
    instance_id = app.enqueue(name)
    return instance_id, app.log_path(app.instance(instance_id))


def test_a_symlink_out_of_the_log_dir_is_not_followed(
    sqlite_app: norc.Norc, tmp_path: Path, log_dir: Path
) -> None:
    """A log file, or a directory on its way, linking out of the log store is not served."""
    app = sqlite_app
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("root:x:0:0:TOP SECRET\n")
    linked, path = _instance_with_log(app, "linked")
    path.parent.mkdir(parents=True)
    path.symlink_to(secret)
    ex = live_daemon(app)
    daemon_log = log_dir / "executors" / f"executor-{ex}"
    daemon_log.parent.mkdir(parents=True)
    daemon_log.symlink_to("/etc/passwd")
    via_dir, dir_path = _instance_with_log(app, "via-dir")
    (outside / dir_path.name).write_text("TOP SECRET by directory\n")
    dir_path.parent.symlink_to(outside, target_is_directory=True)
    with local_client(app) as web:
        for url in (
            f"/api/instances/{linked}/log",
            f"/api/instances/{linked}/log?offset=-10",
            f"/api/daemons/{ex}/log",
            f"/api/instances/{via_dir}/log",
        ):
            response = web.get(url)
            assert response.status_code == 404, (url, response.text)
            assert "SECRET" not in response.text and "root:" not in response.text
            assert str(log_dir) not in response.text and str(tmp_path) not in response.text


def test_a_symlink_inside_the_log_dir_and_fifos(sqlite_app: norc.Norc, log_dir: Path) -> None:
    """A link to another log inside the store is served; a FIFO is refused, never waited on."""
    app = sqlite_app
    _, path = _instance_with_log(app, "inside")
    path.parent.mkdir(parents=True)
    path.write_text("the real log\n")
    second = app.enqueue("inside")
    app.log_path(app.instance(second)).symlink_to(path)
    third = app.enqueue("inside")
    os.mkfifo(app.log_path(app.instance(third)))
    with local_client(app) as web:
        assert web.get(f"/api/instances/{second}/log").json()["text"] == "the real log\n"
        fifo = web.get(f"/api/instances/{third}/log")
        assert fifo.status_code == 404


def test_log_errors_do_not_reveal_the_log_dir(sqlite_app: norc.Norc, log_dir: Path) -> None:
    """No log yet, or a stored key leaving the log directory: the message hides its path."""
    app = sqlite_app
    missing, _ = _instance_with_log(app, "missing")
    sneaky, _ = _instance_with_log(app, "sneaky")
    with app.db.transaction() as tx:
        tx.conn.execute(
            sa.update(instances_table)
            .where(instances_table.c.id == sneaky)
            .values(log_key="../../elsewhere")
        )
    with local_client(app) as web:
        for instance_id, status in ((missing, 404), (sneaky, 400)):
            response = web.get(f"/api/instances/{instance_id}/log")
            assert response.status_code == status, response.text
            message = response.json()["error"]
            assert str(log_dir.resolve()) not in message and str(log_dir) not in message
            assert f"instance {instance_id}" in message or "log" in message


def test_malformed_host_and_origin_headers_are_refused_not_crashes(sqlite_app: norc.Norc) -> None:
    """A Host or Origin with an unclosed IPv6 bracket is a 403, never a 500."""
    ex = live_daemon(sqlite_app)
    with local_client(sqlite_app) as web:
        headers = csrf(web)
        for host in ("[::1", "[bad", "a]b", ""):
            assert web.get("/api/session", headers={"Host": host}).status_code == 403, host
            assert web.get("/api/status", headers={"Host": host}).status_code == 403, host
        response = web.post(
            f"/api/daemons/{ex}/request",
            json={"request": "STOP"},
            headers={**headers, "Origin": "http://[::1"},
        )
        assert response.status_code == 403 and "Origin" in response.json()["error"]
    assert sqlite_app.daemons()[0].request is None


# -- no input is a 500 ---------------------------------------------------------------------

_FIELDS = ["request", "force", "wait", "timeout", "queue", "priority", "other"]
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["STOP", "pause", "default", "\x00"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
_BODIES = st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=8), _JSON, max_size=4) | _JSON


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_BODIES, index=st.integers(min_value=0, max_value=100))
def test_no_request_body_is_a_server_error(sqlite_app: norc.Norc, body: Any, index: int) -> None:
    """Whatever JSON a change is sent, the answer is a 2xx, 4xx: never a 500."""
    app = sqlite_app
    if not app.tasks():
        app.save_task(NoopTask(name="fuzz"))
        app.add_schedule("fuzz", cron="@daily")
        app.enqueue("fuzz")
        live_daemon(app)
    task, schedule = app.tasks()[0], app.schedules()[0]
    instance, daemon = app.instances()[0], app.daemons()[0]
    posts = [e for e in ENDPOINTS if e.method == "POST"]
    e = posts[index % len(posts)]
    url = (
        e.path.replace("{task_id:id}", str(task.id))
        .replace("{schedule_id:id}", str(schedule.id))
        .replace("{instance_id:id}", str(instance.id))
        .replace("{daemon_id:id}", str(daemon.id))
        .replace("{host}", "web-test-host")
    )
    with local_client(app) as web:
        headers = {**csrf(web), "Content-Type": "application/json"}
        response = web.post(url, content=json.dumps(body), headers=headers)
    assert response.status_code < 500, (url, body, response.text)
    assert set(response.json()) == {"error"} or response.status_code == 200
