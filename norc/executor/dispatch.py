"""The hand-off between an executor's claim loop and its slots, and how much to claim.

Claimed instances wait in one local FIFO that every slot takes from. The claim loop
asks for as many instances as there are idle slots, plus a *claim-ahead*: what the
executor has recently been finishing in ``ahead_seconds`` (0.1 s by default). Short
instances then arrive in claims of tens or hundreds (one round trip for many), while
an executor of long instances claims only for its idle slots, as if there were no
claim-ahead at all, since its recent rate times 0.1 s rounds down to nothing.

A claimed instance is RUNNING in the database from its claim (the claim is what makes
it this executor's, exactly once), with no ``started_at``: the executor records its
start, durably, just before a slot begins it (``Database.mark_started``). So the buffer
has two parts: claimed work waiting for a slot, and *marked* work, whose start is
recorded, which is all the slots ever take. The executor's recorder marks, in one
statement, as many as there are idle slots to take them (plus what the worker loop asks
for to send ahead, see :mod:`norc.executor.workerloop`), so a kill finds the rest
unmarked and a survivor gives them back to their queue untouched. If claimed work
still waits after ``max_wait`` seconds (all slots became busy with long instances),
the executor gives it back to its queue so that another executor can run it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar


class _Claimed(Protocol):
    claimed_at: float  # time.monotonic() of the claim


W = TypeVar("W", bound=_Claimed)

#: Marked work that no taker wants any more (the worker loop's short runs turned long)
#: for this many seconds has its start mark taken back, so that a kill finds it unmarked.
SURPLUS_AGE = 0.02
#: Never claim more than this at once, whatever the rate.
MAX_CLAIM = 256
#: How often the rate estimate is refreshed (seconds).
RATE_WINDOW = 0.25
#: ... or sooner, once this many completions per slot have been seen (and at least
#: RATE_WINDOW / 10 has passed): a burst of short instances into an idle executor then
#: gets a claim-ahead within tens of milliseconds instead of after a whole window.
EARLY_SAMPLE_PER_SLOT = 4


class Dispatch(Generic[W]):
    """A FIFO of claimed work shared by the slots, with the counts the claim loop needs."""

    def __init__(
        self,
        slots: int,
        *,
        ahead_seconds: float,
        max_wait: float,
        on_work: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slots = slots
        #: What the completion rate is timed by (a test's own clock: see _sample).
        self._clock = clock
        #: Called after work is put or the dispatch is closed, for a taker that waits on
        #: something else than this object's condition (the worker loop's poll).
        self._on_work = on_work
        self.closed = False
        self.ahead_seconds = ahead_seconds
        self.max_wait = max_wait
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._wants_marks = threading.Condition(self._lock)
        self._marks_done = threading.Condition(self._lock)
        self._ready: deque[W] = deque()  # claimed, start not recorded
        self._marked: deque[W | None] = deque()  # start recorded; None: a slot should end
        self._marked_at: dict[int, float] = {}  # id(work) -> time.monotonic() of its mark
        self._marking = 0  # taken by the recorder, start being recorded
        self._takers = 0  # slot threads waiting in take() for marked work
        self._loop_wants = 0  # marked work the worker loop could start or send ahead now
        self._marking_stopped = False
        self._held = False  # hold_marks(): mark nothing more
        self._idle = slots
        self._done = 0
        self._rate = 0.0
        self._sampled_at = clock()
        self._sampled_done = 0
        self._refill_at = 0

    # -- the claim loop's side ---------------------------------------------------------

    def wanted(self) -> int:
        """How many instances to claim now; 0 while the slots have enough to go on.

        The buffer is refilled once it is down to half the claim-ahead, so claims stay
        big; with no claim-ahead (long instances) only idle slots with nothing to take
        make a claim, one per freed slot at most.
        """
        with self._lock:
            self._sample()
            ahead = min(MAX_CLAIM, int(self._rate * self.ahead_seconds))
            self._refill_at = ahead // 2
            buffered = len(self._ready) + len(self._marked) + self._marking
            if self._idle <= buffered and buffered > self._refill_at:
                return 0
            return max(0, min(MAX_CLAIM, self._idle + ahead - buffered))

    def wait_for_room(self, timeout: float) -> None:
        """Block until a slot finishes something (or ``timeout``)."""
        with self._lock:
            self._has_room.wait(timeout)

    def put(self, works: Iterable[W]) -> None:
        """Hand claimed work to the slots, in claim order."""
        with self._lock:
            self._ready.extend(works)
            self._wants_marks.notify()

    def stale(self) -> list[W]:
        """Take out the work that has waited longer than ``max_wait`` (to give it back).

        Taking any out also drops the claim-ahead to nothing until slots finish again.
        """
        cutoff = time.monotonic() - self.max_wait
        with self._lock:
            if not self._ready or self._ready[0].claimed_at > cutoff:
                return []
            old = [w for w in self._ready if w.claimed_at <= cutoff]
            self._ready = deque(w for w in self._ready if w.claimed_at > cutoff)
            # The slots are held up: the recent rate says nothing about the next second.
            # Kept, it decays by half per RATE_WINDOW, and the claim loop would claim the
            # given-back work again at once, hold it max_wait and give it back again,
            # starving the other executors for a second or more (the test in
            # test_claim_ahead took 2-3 s for 50 no-ops on PostgreSQL; 0.05 s without re-claims).
            self._rate = 0.0
            self._sampled_at, self._sampled_done = self._clock(), self._done
            return old

    def waiting(self) -> list[W]:
        """The work no slot has started yet (a snapshot; it stays in the buffer)."""
        with self._lock:
            return [w for w in (*self._marked, *self._ready) if w is not None]

    def remove(self, works: Iterable[W]) -> list[W]:
        """Take these out of the buffer if no slot has started them; returns those taken."""
        gone = {id(w) for w in works}
        with self._lock:
            taken = [w for w in (*self._marked, *self._ready) if w is not None and id(w) in gone]
            for work in taken:
                self._marked_at.pop(id(work), None)
            if taken:
                self._ready = deque(w for w in self._ready if id(w) not in gone)
                self._marked = deque(w for w in self._marked if w is None or id(w) not in gone)
            return taken

    def unstarted(self) -> list[W]:
        """Take out every piece of work no slot has started (marked or not: the executor
        is alive to give it back, so a recorded start of work it never began is undone)."""
        with self._lock:
            taken = [w for w in (*self._marked, *self._ready) if w is not None]
            self._ready = deque()
            self._marked = deque(w for w in self._marked if w is None)
            self._marked_at.clear()
            return taken

    def close(self) -> None:
        """Let each slot end once the work already handed over is done."""
        with self._lock:
            self.closed = True
            self._marked.extend([None] * self.slots)
            self._has_work.notify_all()
        if self._on_work is not None:
            self._on_work()

    # -- the recorder's side (marking) ------------------------------------------------

    def to_mark(
        self, timeout: float | None = None, wake: Callable[[], bool] | None = None
    ) -> tuple[list[W], list[W]] | None:
        """Wait for the recorder's next marking step: ``(to_mark, to_unmark)``.

        To mark: claimed work, once takers want more than is marked (slot threads
        waiting in :meth:`take`, or what the worker loop said it could start:
        :meth:`want`). To unmark: marked work that no taker has wanted for
        :data:`SURPLUS_AGE` (the last ones marked first), whose start mark is taken
        back. ``([], [])`` after ``timeout``, or as soon as ``wake()`` is true (the
        recorder has outcomes to write; :meth:`finished` and :meth:`poke` wake the
        wait); None once marking is stopped.
        """
        with self._lock:
            while not self._marking_stopped:
                want = self._takers + self._loop_wants - len(self._marked) - self._marking
                if want > 0 and self._ready and not self._held:
                    batch = [self._ready.popleft() for _ in range(min(want, len(self._ready)))]
                    self._marking += len(batch)
                    return batch, []
                if wake is not None and wake():
                    return [], []
                wait = timeout
                if want < 0:
                    surplus = self._surplus(-want)
                    if surplus:
                        return [], surplus
                    wait = SURPLUS_AGE if timeout is None else min(timeout, SURPLUS_AGE)
                if not self._wants_marks.wait(wait) and wait == timeout:
                    return [], []
            return None

    def _surplus(self, count: int) -> list[W]:
        """Take out up to ``count`` marked works from the back that were marked at least
        SURPLUS_AGE ago (called with the lock held)."""
        cutoff = time.monotonic() - SURPLUS_AGE
        taken: list[W] = []
        while len(taken) < count and self._marked:
            last = self._marked[-1]
            if last is None or self._marked_at.get(id(last), 0.0) > cutoff:
                break
            self._marked.pop()
            self._marked_at.pop(id(last), None)
            taken.append(last)
        taken.reverse()
        self._marking += len(taken)
        return taken

    def marked(self, works: list[W], count: int, unmarked: Iterable[W] = ()) -> None:
        """The recorder recorded the start of ``works`` (of ``count`` it took): the slots may
        take them; ``unmarked`` go back to the front of the claimed work (the write
        failed, or their start mark was taken back)."""
        now = time.monotonic()
        with self._lock:
            self._marking -= count
            if not self._marking:
                self._marks_done.notify_all()
            self._marked.extend(works)
            for work in works:
                self._marked_at[id(work)] = now
            self._ready.extendleft(reversed(list(unmarked)))
            self._has_work.notify(len(works))
        if works and self._on_work is not None:
            self._on_work()

    def stop_marking(self) -> None:
        """End marking (before the executor gives back what it did not start); returns
        once no start is being recorded, so that all claimed work is in the buffer."""
        with self._lock:
            self._marking_stopped = True
            self._wants_marks.notify_all()
            while self._marking:
                self._marks_done.wait()

    def hold_marks(self) -> None:
        """Mark nothing more (a KILL: what is claimed goes back, nothing new starts)."""
        with self._lock:
            self._held = True

    def drain_claimed(self) -> None:
        """Wait until every claimed instance has been marked and taken (a stop with a
        queue that cannot take work back: the slots run it all)."""
        with self._lock:
            while self._ready or self._marking or any(w is not None for w in self._marked):
                self._marks_done.wait(0.1)

    def want_one_more(self) -> None:
        """The worker loop's lane just finished with nothing sent ahead: it can start one
        more, so that the recorder marks it in the transaction that writes the outcome
        (the loop's next :meth:`want` corrects the count)."""
        with self._lock:
            self._loop_wants += 1

    def poke(self) -> None:
        """Wake a :meth:`to_mark` wait to look at its ``wake()`` again."""
        with self._lock:
            self._wants_marks.notify()

    def want(self, count: int) -> None:
        """The worker loop could start (or send ahead to busy workers) ``count``
        instances now: have that many marked. Marked work is started or sent within a
        turn of the loop, so little more than that is ever marked and not begun."""
        with self._lock:
            self._loop_wants = count
            marked = len(self._marked) + self._marking
            if (count > marked and self._ready) or count < len(self._marked):
                self._wants_marks.notify()  # to mark more, or to take back a surplus

    # -- the slots' side ---------------------------------------------------------------

    def take(self) -> W | None:
        """The next piece of work, waiting for one; None means the slot should end."""
        with self._lock:
            if not self._marked:
                self._takers += 1
                self._wants_marks.notify()
                while not self._marked:
                    self._has_work.wait()
                self._takers -= 1
            work = self._marked.popleft()
            if work is not None:
                self._idle -= 1
                self._marked_at.pop(id(work), None)
            return work

    def take_nowait(self) -> W | None:
        """The next piece of marked work if one is ready, else None (see :attr:`closed`)."""
        with self._lock:
            while self._marked:
                work = self._marked.popleft()
                if work is not None:
                    self._idle -= 1
                    self._marked_at.pop(id(work), None)
                    if self._ready:  # what is marked is short of what the loop wants now
                        self._wants_marks.notify()
                    return work
            return None

    def any_ready(self) -> bool:
        """Whether anything waits to be taken or marked: a hint, read without the lock,
        for a taker that has a price to pay before taking (the worker loop sizing up its
        lanes)."""
        return bool(self._marked) or bool(self._ready)

    def put_back(self, work: W) -> None:
        """Work a slot took but could not start (its worker was killed first): it goes
        first, for the next free slot (still marked: it is this executor's to start)."""
        with self._lock:
            self._marked.appendleft(work)
            self._idle += 1
            self._has_work.notify()

    def finished(self) -> None:
        """A slot is idle again."""
        with self._lock:
            self._idle += 1
            self._done += 1
            self._wants_marks.notify()  # the recorder has an outcome to write
            # Wake the claim loop only when a claim would be made: not once per instance.
            if len(self._ready) <= self._refill_at:
                self._has_room.notify()

    def _sample(self) -> None:
        """Refresh the completion rate (instances/s, smoothed) every RATE_WINDOW, or as
        soon as enough completions make an early sample meaningful."""
        now = self._clock()
        elapsed = now - self._sampled_at
        if elapsed < RATE_WINDOW and (
            elapsed < RATE_WINDOW / 10
            or self._done - self._sampled_done < EARLY_SAMPLE_PER_SLOT * self.slots
        ):
            # Until then the claims are one per idle slot: a 10k drain of no-ops used to
            # spend its first quarter second in claims of 8, at twice the claim cost per
            # instance (A/B in docs/performance.md).
            return
        current = (self._done - self._sampled_done) / elapsed
        # Weighted towards the present, so that a change of workload (short to long
        # instances) shrinks the claim-ahead within a second or so.
        self._rate = 0.5 * self._rate + 0.5 * current
        self._sampled_at, self._sampled_done = now, self._done
