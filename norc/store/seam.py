"""The seam between queue plugins and Norc's store: the only way a queue reaches the database.

A queue object is given its store as ``db`` (``Queue.__init__``). Whatever the object
behind it is (today :class:`norc.store.database.Database`), a queue may rely on the
members listed here and on nothing else; the rest of the store can change between
releases without telling queue plugins. Two tiers:

:class:`QueueStore`
    What every queue may call, whatever it keeps its items in (SQS, Redis, a file): a
    transaction, the claim-marking that makes running exactly-once
    (:meth:`~QueueStore.mark_running`), the still-queued check that tells a lost
    race from a concurrency limit (:meth:`~QueueStore.still_queued`), instance
    snapshots for messages (:meth:`~QueueStore.instances_by_id`) and the in-process
    wake-ups (:attr:`~QueueStore.wakeups`).

:class:`SQLQueueStore`
    :class:`QueueStore` and what a queue that keeps its items in Norc's own database
    needs besides (the built-in ``dbqueue`` is the first such queue, not a privileged
    one): the dialect, read connections, the autocommit and driver-level connections
    of the hot paths, and the helpers to name rows by id. Its SQL may use the tables
    re-exported here (``instances``, ``tasks``, ``queue_items``); it writes
    ``queue_items`` and moves ``instances`` QUEUED → RUNNING only as
    :meth:`QueueStore.mark_running` does (the conditional ``status = 'QUEUED'`` update
    with :func:`running_values`), so that running stays exactly-once.

Queue modules import from ``norc.store`` this module only; ``tests/test_queue_seam.py``
fails if one reaches past it (another module of the store, or a member of ``db``
not listed here), and mypy holds them to it through the types.

What the seam does *not* hold is deliberate: an instance's end is recorded by the
executor (which then calls :meth:`norc.Queue.release`), and work claimed and never
started is made QUEUED again by the executor before :meth:`norc.Queue.give_back` runs.
A queue only forgets or re-offers its own items.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import PoolProxiedConnection

from norc.records import Claimant, InstanceRecord
from norc.store.connections import Transaction, driver_sql
from norc.store.database import by_ids, ids_in, raw_columns, running_values, unindexed_status_is
from norc.store.schema import instances, naive_utc, queue_items, tasks, utcnow
from norc.store.wakeups import Wakeups

if TYPE_CHECKING:
    from norc.store.database import Database

__all__ = [
    "QueueStore",
    "SQLQueueStore",
    "Transaction",
    "Wakeups",
    "by_ids",
    "driver_sql",
    "ids_in",
    "instances",
    "naive_utc",
    "queue_items",
    "raw_columns",
    "running_values",
    "tasks",
    "unindexed_status_is",
    "utcnow",
]

S = TypeVar("S")


@runtime_checkable
class QueueStore(Protocol):
    """What any queue may call on its ``db``; see the module docstring."""

    @property
    def wakeups(self) -> Wakeups:
        """In-process wake-ups by queue name: ``notify(name)`` after a push this process
        made (an executor of this process waiting in ``claim`` returns at once),
        ``generation(name)`` before looking for work, ``wait(name, generation,
        timeout)`` to sleep until the next notify. Other processes are the queue's
        own business (SQS long polls, PostgreSQL's NOTIFY)."""
        ...

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A write transaction that commits on leaving the block (``BEGIN IMMEDIATE`` on
        SQLite); ``tx.after_commit(fn)`` runs ``fn`` once it committed, never after a
        rollback. Raises :class:`norc.errors.DatabaseUnreachable` when the database
        cannot be reached."""
        ...

    def mark_running(
        self,
        tx: Transaction,
        ids: Sequence[int],
        claimant: Claimant,
        *,
        check_limits: bool = True,
    ) -> list[int]:
        """Move QUEUED instances to RUNNING for ``claimant`` in ``tx``; return the ids won.

        The claim-marking every :meth:`norc.Queue.claim` must go through: a conditional
        update that only one claimant wins, so a message delivered twice runs once.
        Instances whose task is at its concurrency limit stay QUEUED and are not
        returned. ``check_limits=False`` only for a caller that already knows none of
        these tasks has a limit (saves a round trip).
        """
        ...

    def still_queued(self, tx: Transaction, ids: Collection[int]) -> set[int]:
        """Which of ``ids`` are still QUEUED: after :meth:`mark_running`, the ids it did
        not win but that are held back by a concurrency limit (offer them again
        later); the others ran or ended elsewhere (drop their items)."""
        ...

    def instances_by_id(self, ids: Collection[int]) -> list[InstanceRecord]:
        """Read-only snapshots of these instances (missing ids are left out)."""
        ...


@runtime_checkable
class SQLQueueStore(QueueStore, Protocol):
    """What a queue keeping its items in Norc's own database may call besides."""

    @property
    def dialect(self) -> str:
        """SQLAlchemy's backend name: ``sqlite``, ``postgresql``, ``mysql`` or ``mariadb``."""
        ...

    @property
    def url(self) -> URL:
        """The database URL (SQLite: ``url.database`` is the file, or ``:memory:``)."""
        ...

    @property
    def engine(self) -> Engine:
        """The main pool: for compiling statements (:func:`driver_sql`) and, on SQLite,
        a raw connection of the queue's own (the built-in watches ``PRAGMA data_version``
        on one)."""
        ...

    def reading(self) -> AbstractContextManager[Connection]:
        """A read-only connection (a deferred transaction on SQLite: it takes no lock)."""
        ...

    def connection_errors(self) -> AbstractContextManager[None]:
        """Around statements run on a connection the queue holds: a refused or lost
        connection raised as :class:`norc.errors.DatabaseUnreachable`."""
        ...

    def autocommit_connection(self) -> Connection:
        """An autocommit connection (server databases) that the queue keeps and closes:
        for a statement run over and over from one thread, and for ``LISTEN``."""
        ...

    def driver_autocommit(self) -> AbstractContextManager[Any]:
        """The driver's own connection (psycopg's), in autocommit, for one hot statement
        of fixed text; its errors come out as SQLAlchemy's."""
        ...

    def driver_errors(self, pooled: PoolProxiedConnection | None) -> AbstractContextManager[None]:
        """Around statements run on the driver connection of ``pooled``: driver errors
        raised as SQLAlchemy's, a lost connection invalidated."""
        ...

    def for_ids(self, statements: tuple[S, S], ids: Collection[int]) -> tuple[S, Any]:
        """The statement of a :func:`by_ids` pair that suits this database, and the value
        to bind as its ``ids`` parameter."""
        ...

    def prefetch_claimed(self, tx: Transaction, ids: Collection[int]) -> None:
        """Read the claimed instances inside the claim's transaction, so that the
        executor's next look at them on this thread needs no round trip."""
        ...

    def prefetch_started(self, conn: Connection, rows: Sequence[Any]) -> None:
        """Like :meth:`prefetch_claimed`, from rows the claim statement returned: each
        instance's :func:`raw_columns` in table order, then its task's ``updated_at``."""
        ...


if TYPE_CHECKING:
    # mypy proves that the store queues are given satisfies the seam (members and
    # signatures); tests/test_queue_seam.py checks the same names at run time.
    def _database_is_a_queue_store(db: Database) -> SQLQueueStore:
        return db
