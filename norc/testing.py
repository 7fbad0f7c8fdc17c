"""Helpers for testing Norc and its plugins: polling, ports, and a Queue contract suite.

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
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from norc.abc import Claimant, RunContext, Task
from norc.errors import LogNotFound
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
        """On an empty queue a claim returns [] after about its timeout."""
        queue = make_queue("contract-c")
        start = time.monotonic()
        assert queue.claim(_claimant(1), 5, timeout=0.3) == []
        assert 0.25 <= time.monotonic() - start < 5

    def test_concurrent_claimants_never_share_an_instance(self, app: Any, make_queue: Any) -> None:
        """Four claimants racing over one queue each get disjoint instances, all of them."""
        queue_name = "contract-d"
        make_queue(queue_name)
        ids = self._enqueue(app, queue_name, 60)
        results: dict[int, list[int]] = {n: [] for n in range(1, 5)}

        def drain(n: int) -> None:
            with type(app)(settings=app.settings) as handle:  # closes its connections
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
            return
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
            return
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
