"""A queue type: ``spool`` keeps its items as files in a directory (a maildir-like spool).

It shows what a queue needs of Norc, and that the seam is enough: everything it asks of
the database goes through ``self.db``, a :class:`norc.store.seam.QueueStore`.

- An item is a file in ``<path>/<queue>/waiting/``, named so that sorting the names
  gives the claim order (priority, then instance id) and the time it is due.
- :meth:`SpoolQueue.push` writes the files only once the enqueuing transaction has
  committed (``tx.after_commit``): no file ever names a rolled-back instance.
- :meth:`SpoolQueue.claim` takes files by renaming them into ``claimed/`` (one rename
  wins, however many claimants race), then moves their instances QUEUED → RUNNING with
  ``db.mark_running``, the conditional update that keeps running exactly-once.
  Instances it did not win that ``db.still_queued`` reports are held back by a
  concurrency limit: their files go back, due a little later. The others ran or ended
  elsewhere: their files are deleted.
- :meth:`SpoolQueue.release` deletes the files of finished instances once their end is
  committed; :meth:`SpoolQueue.give_back` moves claimed files back to ``waiting/``.
- An idle claim polls the directory every ``poll`` seconds, and returns at once when
  this process pushes (``db.wakeups``) or :meth:`SpoolQueue.wake` is called.

Every host that runs executors of the queue must see the same directory. The files of
an executor that died stay in ``claimed/`` until a survivor settles it: Norc then
releases its instances (:meth:`SpoolQueue.release`), retried ones come as new items.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs

from norc.abc import Claimant, Queue, QueueItem
from norc.logs import safe_component
from norc.plugin_settings import PluginSettings, number, optional, text
from norc.store.seam import QueueStore, Transaction

#: How long an instance held back by its task's concurrency limit waits to be offered again.
DEFERRAL = timedelta(seconds=0.5)
DEFAULT_POLL = 0.05
#: Priorities are stored as ``OFFSET - priority`` so that names sort highest first.
OFFSET = 2**31


@attrs.frozen(kw_only=True)
class SpoolSettings(PluginSettings):
    """The spool queue's settings."""

    kind = "spool queue"

    #: The spool directory (absolute); each queue gets a folder in it.
    path: str = attrs.field(validator=text(r"/.*", "an absolute directory path"))
    #: Seconds between two looks at the directory while a claim waits.
    poll: float | None = attrs.field(default=None, validator=optional(number(0.001, 10)))


def _name(priority: int, instance_id: int, due: datetime | None) -> str:
    due_ms = 0 if due is None else int(due.timestamp() * 1000)
    return f"{OFFSET - priority:011d}-{instance_id:020d}-{due_ms:015d}"


def _names(folder: Path) -> list[str]:
    return [entry.name for entry in folder.iterdir()]


def _parse(name: str) -> tuple[int, int] | None:
    """(instance id, due time in ms) of an item's file name; None for any other file."""
    parts = name.split("-")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[1]), int(parts[2])


class SpoolQueue(Queue):
    """A Norc queue whose items are files in a directory; see the module docstring."""

    type_name = "spool"
    can_give_back = True

    def __init__(self, *, name: str, settings: Mapping[str, Any], db: QueueStore) -> None:
        super().__init__(name=name, settings=settings, db=db)
        config = SpoolSettings.parse(self.settings)
        self.poll = DEFAULT_POLL if config.poll is None else config.poll
        root = Path(config.path) / safe_component(name)
        self.waiting, self.claimed = root / "waiting", root / "claimed"
        for folder in (self.waiting, self.claimed):
            folder.mkdir(parents=True, exist_ok=True)
        self._interrupted = False

    @classmethod
    def validate_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """``path`` (required): the spool directory; ``poll``: seconds between looks
        while a claim waits (default 0.05)."""
        return SpoolSettings.parse(settings).given()

    # -- pushing ---------------------------------------------------------------------

    def push(self, items: Sequence[QueueItem], tx: Transaction) -> None:
        """Write one file per item once ``tx`` has committed."""
        names = [_name(i.priority, i.instance_id, i.available_at) for i in items]
        tx.after_commit(lambda: self._write(names))

    def _write(self, names: list[str]) -> None:
        for name in names:
            # The name is the whole item, so creating the (empty) file publishes it at once.
            (self.waiting / name).touch()
        self.db.wakeups.notify(self.name)  # an executor of this process starts at once

    # -- claiming --------------------------------------------------------------------

    def claim(self, claimant: Claimant, limit: int, timeout: float) -> list[int]:
        """Claim up to ``limit`` instances, waiting up to ``timeout`` seconds for some."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                generation = self.db.wakeups.generation(self.name)
                if self._interrupted:
                    return []
                won = self._claim_now(claimant, limit)
                remaining = deadline - time.monotonic()
                if won or remaining <= 0:
                    return won
                self.db.wakeups.wait(self.name, generation, min(remaining, self.poll))
        finally:
            self._interrupted = False

    def _claim_now(self, claimant: Claimant, limit: int) -> list[int]:
        now_ms = int(time.time() * 1000)
        taken: dict[int, str] = {}
        for name in sorted(_names(self.waiting)):
            if len(taken) >= limit:
                break
            parsed = _parse(name)
            if parsed is None or parsed[1] > now_ms:
                continue
            try:
                (self.waiting / name).rename(self.claimed / name)
            except FileNotFoundError:
                continue  # another claimant renamed it first
            taken[parsed[0]] = name
        if not taken:
            return []
        ids = sorted(taken)
        try:
            with self.db.transaction() as tx:
                won = self.db.mark_running(tx, ids, claimant)
                # Not won but still QUEUED: held back by the task's concurrency limit.
                deferred = self.db.still_queued(tx, set(ids) - set(won))
        except Exception:
            for name in taken.values():  # nothing was claimed: offer them all again
                (self.claimed / name).rename(self.waiting / name)
            raise
        later = datetime.now(UTC) + DEFERRAL
        for instance_id, name in taken.items():
            if instance_id in won:
                continue
            if instance_id in deferred:
                priority = OFFSET - int(name.split("-")[0])
                again = _name(priority, instance_id, later)
                (self.claimed / name).rename(self.waiting / again)
            else:  # it ran or ended elsewhere: the file is stale
                (self.claimed / name).unlink(missing_ok=True)
        # The claim order: priority, then id, as the names sort.
        return [i for i, _ in sorted(taken.items(), key=lambda kv: kv[1]) if i in won]

    # -- after the claim -------------------------------------------------------------

    def release(self, instance_ids: Sequence[int], tx: Transaction) -> None:
        """Delete the files of these instances once their end is committed."""
        ids = set(instance_ids)
        tx.after_commit(lambda: self._remove(ids))

    def _remove(self, ids: Collection[int]) -> None:
        for folder in (self.claimed, self.waiting):
            for name in _names(folder):
                parsed = _parse(name)
                if parsed is not None and parsed[0] in ids:
                    with contextlib.suppress(FileNotFoundError):
                        (folder / name).unlink()

    def give_back(self, instance_ids: Sequence[int], tx: Transaction) -> None:
        """Move the files of claimed, never started instances back to ``waiting/``."""
        ids = set(instance_ids)
        tx.after_commit(lambda: self._unclaim(ids))

    def _unclaim(self, ids: Collection[int]) -> None:
        for name in _names(self.claimed):
            parsed = _parse(name)
            if parsed is not None and parsed[0] in ids:
                (self.claimed / name).rename(self.waiting / name)
        self.db.wakeups.notify(self.name)

    # -- looking ---------------------------------------------------------------------

    def count(self) -> int:
        """Files waiting, due or not."""
        return sum(1 for name in _names(self.waiting) if _parse(name) is not None)

    def peek(self, limit: int = 10) -> list[int]:
        """The next instance ids in claim order (priority, then id)."""
        parsed = (_parse(name) for name in sorted(_names(self.waiting)))
        return [p[0] for p in parsed if p is not None][:limit]

    def wake(self) -> None:
        """Make a waiting claim return now."""
        self._interrupted = True
        self.db.wakeups.notify(self.name)
