"""The web page end to end, in a real headless Chromium driven by Playwright.

Chromium comes from Debian (``apt-get install -y chromium``); a missing browser FAILS
these tests rather than skipping them. Set ``NORC_WEB_SCREENSHOTS=DIR`` to keep
screenshots of the pages (that is how ``docs/screenshots/`` is made).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import uvicorn

import norc
from norc import RunContext, Task, reports
from norc.jobs import Job
from norc.testing import free_port, run_started, wait_until
from norc.web import create_app
from tests.tasks import Outcome

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FAST = {"NORC_HEARTBEAT_INTERVAL": "0.5", "NORC_HEARTBEAT_TIMEOUT": "5"}
TOKEN = "browser-test-token"


@attrs.define(kw_only=True)
class Ticker(Task):
    """Writes ``tick N`` lines to its log, ``count`` of them, ``pause`` seconds apart."""

    count: int = 12
    pause: float = 0.25

    def run(self, ctx: RunContext) -> None:
        for n in range(self.count):
            ctx.log_file.write(f"tick {n}\n".encode())
            ctx.log_file.flush()
            time.sleep(self.pause)


class Server:
    """uvicorn serving an ASGI app on a free loopback port, in a thread of this process."""

    def __init__(self, asgi: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        config = uvicorn.Config(
            asgi, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        wait_until(lambda: self.server.started, 15)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, for this module."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (its own context: no shared storage), confirm dialogs recorded."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(15000)
    pg.dialogs = []  # type: ignore[attr-defined]

    def accept(dialog: Any) -> None:
        pg.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.accept()

    pg.on("dialog", accept)
    yield pg
    context.close()


@pytest.fixture
def live(sqlite_url: str, log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Norc handle with an embedded executor and scheduler running, beating fast."""
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    app = norc.Norc(sqlite_url, log_dir=log_dir)
    app.save_task(Outcome(name="ok"))
    app.save_task(Outcome(name="broken", raise_="it broke"))
    app.save_task(Ticker(name="ticker"))
    app.add_schedule("ok", every=1.0, start=0)
    executor = app.executor(isolation="thread", concurrency=2).start()
    scheduler = app.scheduler().start()
    yield app, executor, scheduler
    executor.kill(timeout=15)
    scheduler.stop(timeout=15)
    app.close()


def screenshot(page: Any, name: str) -> None:
    """Keep a screenshot when NORC_WEB_SCREENSHOTS names a folder."""
    folder = os.environ.get("NORC_WEB_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_overview_shows_live_daemons_and_pauses_an_executor(live: Any, page: Any) -> None:
    """The overview lists the live daemons; Pause (confirmed) sets PAUSED in the DB and the page."""
    from playwright.sync_api import expect

    app, executor, scheduler = live
    app.enqueue("broken")
    wait_until(lambda: len(app.instances(status={norc.InstanceStatus.SUCCESS})) >= 2, 20)
    with Server(create_app(app)) as server:
        page.goto(server.url + "#/")
        executors = page.locator("#ov-executors")
        expect(executors).to_contain_text(f"executor {executor.id}")
        expect(page.locator("#ov-schedulers")).to_contain_text(f"scheduler {scheduler.id}")
        expect(executors.locator(".status")).to_have_text("RUNNING")
        expect(page.locator("#ov-chart svg rect").first).to_be_visible()
        expect(page.locator("table").last).to_contain_text("SUCCESS")
        expect(page.locator("table").last).to_contain_text("FAILURE")
        page.wait_for_timeout(3000)  # a few depth samples for the queue chart
        screenshot(page, "overview")

        page.click(f'[data-action="pause-executor-{executor.id}"]')
        assert page.dialogs and f"PAUSE executor {executor.id}" in page.dialogs[-1]
        wait_until(lambda: app.daemons("executor")[0].status == "PAUSED", 10)
        expect(executors.locator(".status")).to_have_text("PAUSED")
        expect(page.locator(f'[data-action="resume-executor-{executor.id}"]')).to_be_visible()
        expect(page.locator("#toasts")).to_contain_text(f"PAUSE sent to executor {executor.id}")

        page.locator("[data-group=failed]").first.click()
        expect(page.locator("table").last).not_to_contain_text("SUCCESS")
        assert "status=failed" in page.url


def test_instance_log_is_shown_and_followed_while_running(live: Any, page: Any) -> None:
    """An instance page shows its log growing while it runs and the whole log once it ends."""
    from playwright.sync_api import expect

    app, _executor, _scheduler = live
    instance_id = app.enqueue("ticker")
    wait_until(lambda: run_started(app, instance_id), 15)
    with Server(create_app(app)) as server:
        page.goto(server.url + f"#/instance/{instance_id}")
        log = page.locator("#log")
        expect(log).to_contain_text("tick 1")
        assert app.instance(instance_id).status is norc.InstanceStatus.RUNNING  # still going
        expect(log).to_contain_text("tick 11")
        expect(page.locator("h1 .status")).to_have_text("SUCCESS")
        expect(log).to_contain_text('event="run ended"')
        assert log.inner_text().strip() == app.logs(instance_id).strip()  # each byte once
        screenshot(page, "instance")

        failed = app.enqueue("broken")
        wait_until(lambda: app.instance(failed).status.is_final, 15)
        page.goto(server.url + f"#/instance/{failed}")
        expect(page.locator("#log")).to_contain_text("RuntimeError: it broke")
        expect(page.locator("#inst-facts")).to_contain_text("it broke")

        task_id = app.task_record("ok").id
        page.goto(server.url + f"#/task/{task_id}")
        expect(page.locator("#task-chart svg circle").first).to_be_visible()
        expect(page.locator("#task-schedules")).to_contain_text("every 1s")
        screenshot(page, "task")


def test_a_control_without_credentials_is_refused(live: Any, page: Any) -> None:
    """With a token set, Pause without it is refused (401) and changes nothing until sign-in."""
    from playwright.sync_api import expect

    app, executor, _scheduler = live
    with Server(create_app(app, token=TOKEN)) as server:
        page.goto(server.url + "#/")
        button = page.locator(f'[data-action="pause-executor-{executor.id}"]')
        button.click()
        expect(page.locator("#toasts")).to_contain_text("Refused: authentication required")
        expect(page.locator("#banner")).to_be_visible()
        time.sleep(1.0)
        record = app.daemons("executor")[0]
        assert record.request is None and record.status == "RUNNING"

        # The right token without the page's CSRF header is still refused.
        status = page.evaluate(
            """async ([url, token]) => (await fetch(url, {method: "POST",
                 headers: {"Content-Type": "application/json", Authorization: "Bearer " + token},
                 body: JSON.stringify({request: "STOP"})})).status""",
            [f"api/daemons/{executor.id}/request", TOKEN],
        )
        assert status == 403
        assert app.daemons("executor")[0].request is None

        page.fill("#banner input", TOKEN)
        page.click("#banner button")
        page.locator(f'[data-action="pause-executor-{executor.id}"]').click()
        wait_until(lambda: app.daemons("executor")[0].status == "PAUSED", 10)


def test_job_run_graph_shows_its_nodes_coloured_by_status(live: Any, page: Any) -> None:
    """A finished diamond run: three SUCCESS boxes, two arrows, a node box opens its instance."""
    from playwright.sync_api import expect

    app, _executor, _scheduler = live
    job = Job(name="nightly-etl")
    orders = job.add("ok", name="extract-orders")
    customers = job.add("ok", name="extract-customers")
    job.add("ok", name="load-warehouse", after=[orders, customers])
    app.save_task(job)
    run = app.enqueue("nightly-etl")
    wait_until(lambda: app.instance(run).status.is_final, 30)
    assert app.instance(run).status is norc.InstanceStatus.SUCCESS
    with Server(create_app(app)) as server:
        page.goto(server.url + f"#/job/{run}")
        graph = page.locator("#job-graph svg.graph")
        boxes = graph.locator("g.node")
        expect(boxes).to_have_count(3)
        expect(graph.locator("path.edge")).to_have_count(2)
        expect(page.locator("#job-nodes tbody tr")).to_have_count(3)
        expect(page.locator("h1 .status")).to_have_text("SUCCESS")
        expect(page.locator("#updated")).to_contain_text("final")  # no more polling
        success = page.evaluate(
            """() => { const b = document.createElement("span");
                 b.className = "status s-SUCCESS"; document.body.append(b);
                 const c = getComputedStyle(b).backgroundColor; b.remove(); return c; }"""
        )
        assert success == "rgb(46, 158, 87)"
        nodes = {row["node"]: row for row in reports.job_nodes(app, "nightly-etl", instance_id=run)}
        for k in range(3):
            box = boxes.nth(k)
            assert box.get_attribute("data-status") == "SUCCESS"
            fill = box.locator("rect").evaluate("r => getComputedStyle(r).fill")
            assert fill == success, fill
        # Parents sit in the first column, the child in the second.
        xs = {
            boxes.nth(k).get_attribute("data-node"): boxes.nth(k).bounding_box()["x"]
            for k in range(3)
        }
        assert xs["extract-orders"] == xs["extract-customers"] < xs["load-warehouse"]
        screenshot(page, "job")

        load = nodes["load-warehouse"]["instance"]
        graph.locator('g.node[data-node="load-warehouse"]').click()
        page.wait_for_url(f"**#/instance/{load}")
        expect(page.locator("#inst-facts")).to_contain_text(f"job instance #{run}")


def test_stop_a_queued_instance_from_its_page(live: Any, page: Any) -> None:
    """Stop (confirmed) on a QUEUED instance's page ends it SKIPPED; the button goes away."""
    from playwright.sync_api import expect

    app, _executor, _scheduler = live
    app.create_queue("nobody-listens")
    instance_id = app.enqueue("ok", queue="nobody-listens")
    with Server(create_app(app)) as server:
        page.goto(server.url + f"#/instance/{instance_id}")
        button = page.locator(f'[data-action="stop-instance-{instance_id}"]')
        button.click()
        assert page.dialogs and f"Stop instance #{instance_id}" in page.dialogs[-1]
        wait_until(lambda: app.instance(instance_id).status is norc.InstanceStatus.SKIPPED, 10)
        expect(page.locator("h1 .status")).to_have_text("SKIPPED")
        expect(button).to_have_count(0)
        expect(page.locator("#toasts")).to_contain_text(f"Instance #{instance_id} stopped")
    with Server(create_app(app, read_only=True)) as server:
        page.goto(server.url + f"#/instance/{app.enqueue('ok', queue='nobody-listens')}")
        expect(page.locator("h1 .status")).to_have_text("QUEUED")
        expect(page.locator("[data-action^=stop-instance]")).to_have_count(0)
