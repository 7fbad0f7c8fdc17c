"""Helpers for testing Norc and its plugins: polling, ports, and the contract suites.

A queue plugin proves it honours the :class:`norc.Queue` contract by subclassing
:class:`QueueContract` in its tests and providing a ``make_queue`` fixture::

    class TestMyQueue(QueueContract):
        @pytest.fixture
        def make_queue(self, app):
            def make(name):
                app.create_queue(name, type="myqueue", ...)
                return app.queue(name)
            return make

The suite needs an ``app`` fixture (a :class:`norc.Norc` handle on an empty database).

A log store proves it honours the :class:`norc.LogStore` contract the same way, with
:class:`LogStoreContract` and a ``make_store`` fixture: a store built with the same
settings on the log directory it is given (two calls are two hosts)::

    class TestMyStore(LogStoreContract):
        @pytest.fixture
        def make_store(self):
            return lambda log_dir: MyStore(settings={...}, log_dir=log_dir)

Cases that do not apply to a queue or a store are skipped, saying why.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import pytest

from norc.abc import Claimant, RunContext, Task
from norc.errors import LogNotFound, NorcError
from norc.logs import resolve_key
from norc.status import InstanceStatus

if TYPE_CHECKING:
    from norc.app import Norc


def wait_until(
    predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.02
) -> None:
    """Poll ``predicate()`` until it is truthy; raise ``AssertionError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def run_started(app: Norc, instance_id: int) -> bool:
    """Whether the instance's run has really begun: its log has the "instance started" line.

    RUNNING alone does not say so: an executor's claim marks an instance RUNNING before a
    slot takes it (see claim-ahead in docs/configuration.md), and an executor stopped in
    between gives the instance back to its queue, unstarted.
    """
    try:
        return 'event="instance started"' in app.logs(instance_id)
    except LogNotFound:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@attrs.define(kw_only=True)
class NoopTask(Task):
    """A task that does nothing and succeeds: for tests and benchmarks."""

    type_name = "norc.testing.Noop"

    def run(self, ctx: RunContext) -> bool:
        """Succeed at once."""
        return True


def _claimant(n: int) -> Claimant:
    return Claimant(executor_id=n, host="test-host", pid=1000 + n)


class QueueContract:
    """Behaviour every queue type must show; subclass it with a ``make_queue`` fixture."""

    #: Set False for queues without ordering guarantees (SQS standard queues).
    ordered: bool = True
    #: In-process plugins the suite's extra handles need to find the queue type (an
    #: entry point does it for an installed plugin).
    plugins: ClassVar[Sequence[object]] = ()

    def _enqueue(self, app: Any, queue: str, count: int, priority: int = 0) -> list[int]:
        if not any(t.name == "contract-noop" for t in app.tasks()):
            app.save_task(NoopTask(name="contract-noop"))
        return list(app.enqueue_many("contract-noop", count, queue=queue, priority=priority))

    def test_claim_returns_pushed_instances_as_running(self, app: Any, make_queue: Any) -> None:
        """A claimed instance is RUNNING, owned by the claimant."""
        queue = make_queue("contract-a")
        ids = self._enqueue(app, "contract-a", 3)
        claimed: list[int] = []
        deadline = time.monotonic() + 10
        while len(claimed) < 3 and time.monotonic() < deadline:
            claimed += queue.claim(_claimant(1), 3 - len(claimed), timeout=1.0)
        assert sorted(claimed) == ids
        for record in app.db.instances_by_id(ids):
            assert record.status is InstanceStatus.RUNNING
            assert record.executor_id == 1

    def test_claim_respects_limit(self, app: Any, make_queue: Any) -> None:
        """A claim never returns more instances than asked for."""
        queue = make_queue("contract-b")
        self._enqueue(app, "contract-b", 5)
        assert 1 <= len(queue.claim(_claimant(1), 2, timeout=5.0)) <= 2

    def test_empty_claim_waits_then_returns_nothing(self, app: Any, make_queue: Any) -> None:
        """On an empty queue a claim waits out its timeout, then returns []."""
        queue = make_queue("contract-c")
        start = time.monotonic()
        assert queue.claim(_claimant(1), 5, timeout=0.3) == []
        # No upper bound: how late a loaded machine returns says nothing of the queue.
        assert time.monotonic() - start >= 0.25

    def test_concurrent_claimants_never_share_an_instance(self, app: Any, make_queue: Any) -> None:
        """Four claimants racing over one queue each get disjoint instances, all of them."""
        queue_name = "contract-d"
        make_queue(queue_name)
        ids = self._enqueue(app, queue_name, 60)
        results: dict[int, list[int]] = {n: [] for n in range(1, 5)}

        def drain(n: int) -> None:
            # closes its connections
            with type(app)(settings=app.settings, plugins=self.plugins) as handle:
                q = handle.queue(queue_name)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    got = q.claim(_claimant(n), 7, timeout=0.5)
                    if not got and sum(len(v) for v in results.values()) >= len(ids):
                        return
                    results[n] += got

        threads = [threading.Thread(target=drain, args=(n,)) for n in results]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        everything = [i for v in results.values() for i in v]
        assert sorted(everything) == ids  # each exactly once

    def test_priority_then_fifo(self, app: Any, make_queue: Any) -> None:
        """Higher priority is claimed first; within a priority, first in first out."""
        if not self.ordered:
            pytest.skip(f"{type(self).__name__}: the queue promises no order")
        queue = make_queue("contract-e")
        low = self._enqueue(app, "contract-e", 3, priority=0)
        high = self._enqueue(app, "contract-e", 2, priority=5)
        assert queue.peek(5) == high + low
        assert queue.claim(_claimant(1), 5, timeout=1.0) == high + low

    def test_count_and_release(self, app: Any, make_queue: Any) -> None:
        """count() sees waiting items; released instances leave the queue for good."""
        queue = make_queue("contract-f")
        self._enqueue(app, "contract-f", 4)
        wait_until(lambda: queue.count() == 4, timeout=10)
        claimed = queue.claim(_claimant(1), 4, timeout=5.0)
        with app.db.transaction() as tx:
            queue.release(claimed, tx)
        assert queue.claim(_claimant(2), 4, timeout=0.2) == []

    def test_given_back_instances_are_claimable_again(self, app: Any, make_queue: Any) -> None:
        """A queue that can take claimed work back offers it to the next claimant."""
        queue = make_queue("contract-g")
        if not queue.can_give_back:
            pytest.skip(f"{type(queue).__name__} cannot take claimed instances back")
        ids = self._enqueue(app, "contract-g", 3)
        claimed = queue.claim(_claimant(1), 3, timeout=5.0)
        assert sorted(claimed) == ids
        with app.db.transaction() as tx:
            back = app.db.give_back(tx, claimed, 1)
            queue.give_back(back, tx)
        assert back == ids
        assert all(r.status is InstanceStatus.QUEUED for r in app.db.instances_by_id(ids))
        again: list[int] = []
        deadline = time.monotonic() + 10
        while len(again) < 3 and time.monotonic() < deadline:
            again += queue.claim(_claimant(2), 3 - len(again), timeout=1.0)
        assert sorted(again) == ids
        assert {r.executor_id for r in app.db.instances_by_id(ids)} == {2}


#: Keys no store may accept: they would address something outside it.
HOSTILE_LOG_KEYS = (
    "../escape",
    "/etc/passwd",
    "tasks/../../x",
    "tasks/a/..",
    "a\\..\\b",
    "",
    "a\nb",
)


class LogStoreContract:
    """Behaviour every log store must show; subclass it with a ``make_store`` fixture.

    ``make_store(log_dir)`` returns a store with the subclass's settings, on ``log_dir``:
    Norc writes each log to ``log_dir / key`` first and then calls ``save(key, path)``,
    and the suite does the same. The suite needs pytest's ``tmp_path`` only.
    """

    #: False for stores that keep logs on the host that wrote them (``local``): the
    #: cases about reading from another host are skipped.
    shared: ClassVar[bool] = True
    #: In-process plugins a Norc handle needs to find the store (an entry point does
    #: it for an installed plugin).
    plugins: ClassVar[Sequence[object]] = ()

    def _write(self, log_dir: Path, key: str, data: bytes) -> Path:
        path = resolve_key(log_dir, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def _host(self, tmp_path: Path, name: str) -> Path:
        path = tmp_path / name
        path.mkdir(exist_ok=True)
        return path

    def _skip_unless_shared(self) -> None:
        if not self.shared:
            pytest.skip(f"{type(self).__name__}: the store keeps logs on the host that wrote them")

    def test_a_saved_log_reads_back_byte_for_byte(self, make_store: Any, tmp_path: Path) -> None:
        """open() returns exactly the bytes saved, undecodable ones included."""
        here = self._host(tmp_path, "a")
        store = make_store(here)
        data = b"[norc] started\nline two\n\xff\xfe not utf-8\r\n\x00end"
        key = "tasks/T/n/n-1"
        location = store.save(key, self._write(here, key, data))
        assert location is None or (isinstance(location, str) and location)
        assert store.open(key) == data

    def test_an_empty_log_reads_back_empty_not_missing(
        self, make_store: Any, tmp_path: Path
    ) -> None:
        """A log of no bytes is there (b""), which is not the same as missing (None)."""
        here = self._host(tmp_path, "a")
        store = make_store(here)
        store.save("tasks/T/e/e-1", self._write(here, "tasks/T/e/e-1", b""))
        assert store.open("tasks/T/e/e-1") == b""

    def test_a_log_never_saved_is_none(self, make_store: Any, tmp_path: Path) -> None:
        """open() of a key nothing was saved under is None, not an error."""
        assert make_store(self._host(tmp_path, "a")).open("tasks/T/n/n-404") is None

    def test_keys_that_share_a_beginning_stay_apart(self, make_store: Any, tmp_path: Path) -> None:
        """``n-1`` and ``n-10`` are two logs: each key reads back its own."""
        here = self._host(tmp_path, "a")
        store = make_store(here)
        for key in ("tasks/T/n/n-1", "tasks/T/n/n-10", "executors/executor-1"):
            store.save(key, self._write(here, key, key.encode()))
        for key in ("tasks/T/n/n-1", "tasks/T/n/n-10", "executors/executor-1"):
            assert store.open(key) == key.encode()

    @pytest.mark.parametrize("key", HOSTILE_LOG_KEYS)
    def test_keys_leaving_the_store_are_refused(
        self, make_store: Any, tmp_path: Path, key: str
    ) -> None:
        """A key with ``..`` segments, a leading ``/``, backslashes or control characters,
        or none at all, raises a NorcError on save and on open."""
        here = self._host(tmp_path, "a")
        store = make_store(here)
        local = self._write(here, "tasks/T/n/n-1", b"x")
        with pytest.raises(NorcError):
            store.save(key, local)
        with pytest.raises(NorcError):
            store.open(key)

    def test_concurrent_saves_each_land(self, make_store: Any, tmp_path: Path) -> None:
        """Norc uploads from several threads at once: each of their logs is kept."""
        here = self._host(tmp_path, "a")
        store = make_store(here)
        keys = [f"tasks/T/n/n-{i}" for i in range(1, 9)]
        paths = [self._write(here, key, key.encode() * 100) for key in keys]
        errors: list[BaseException] = []

        def save(key: str, path: Path) -> None:
            try:
                store.save(key, path)
            except BaseException as exc:  # noqa: BLE001 - reported by the assert below
                errors.append(exc)

        threads = [threading.Thread(target=save, args=kp) for kp in zip(keys, paths, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert [store.open(key) for key in keys] == [key.encode() * 100 for key in keys]

    def test_another_host_reads_what_one_saved(self, make_store: Any, tmp_path: Path) -> None:
        """A store on another host (another, empty log directory) opens the log, even once
        the writer's local file is gone."""
        self._skip_unless_shared()
        here, there = self._host(tmp_path, "a"), self._host(tmp_path, "b")
        path = self._write(here, "tasks/T/n/n-7", b"from host a\n")
        make_store(here).save("tasks/T/n/n-7", path)
        path.unlink()
        assert make_store(there).open("tasks/T/n/n-7") == b"from host a\n"

    def test_a_finished_instance_log_is_readable_through_norc(
        self, make_store: Any, tmp_path: Path
    ) -> None:
        """A Norc handle configured with the store runs an instance; its log is read back
        from the store (``remote=True``), on another host too when the store is shared."""
        # Imported here: this module is also imported by worker processes (NoopTask),
        # which need nothing of the handle.
        from norc.app import Norc

        template = make_store(self._host(tmp_path, "a"))
        url = f"sqlite:///{tmp_path / 'norc.db'}"

        def handle(host: str) -> Norc:
            return Norc(
                url,
                log_dir=self._host(tmp_path, host),
                log_store=template.store_name,
                log_store_settings=template.settings,
                plugins=self.plugins,
            )

        with handle("a") as app:
            app.save_task(NoopTask(name="contract-noop"))
            instance_id = app.enqueue("contract-noop")
            with app.executor(isolation="thread"):
                wait_until(lambda: app.instance(instance_id).status.is_final)

            def stored() -> bool:
                try:
                    return 'event="instance started"' in app.logs(instance_id, remote=True)
                except LogNotFound:
                    return False  # the upload runs in the background

            wait_until(stored)
            text = app.logs(instance_id, remote=True)
        if self.shared:
            with handle("b") as there:
                assert there.logs(instance_id) == text
