"""The web API's robustness: every bad input is a 4xx naming it, no secret leaks anywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest

import norc
from norc.testing import NoopTask
from norc.web.api import ENDPOINTS
from norc.web.openapi import openapi_document
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
        ("/api/status?since=99999999999999999w", "since"),
        ("/api/instances?queue=a%00b", "queue"),
        ("/api/instances?task=%1b[31m", "task"),
        ("/api/schedules?task=" + "x" * 300, "task"),
        ("/api/status?since=1h%00", "since"),
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


def test_empty_query_parameters_are_the_defaults(sqlite_app: norc.Norc) -> None:
    """`since=`, `limit=`, `buckets=` are schema-valid and mean 'not given'."""
    with local_client(sqlite_app) as web:
        for url in (
            "/api/status?since=",
            "/api/executors?since=&limit=",
            "/api/instances?since=&until=&limit=&before_id=&task=&queue=",
            "/api/charts/instances?since=&buckets=",
            "/api/tasks?since=",
        ):
            assert web.get(url).status_code == 200, url
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
