"""Connections to one database: the engines with each backend's settings, the schema
check, transactions and the errors that say a database cannot be reached.

:class:`Connections` is the layer under every store of SQL (:class:`~norc.store.database.
Database`, :class:`~norc.store.schedules.ScheduleStore`): it knows how to connect and to
run a transaction, nothing of Norc's tables but the schema check.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.exc import DatabaseError as SADatabaseError
from sqlalchemy.pool import PoolProxiedConnection

from norc.errors import ConfigurationError, DatabaseUnreachable, SchemaNewer, SchemaOutdated
from norc.store.schema import tasks

#: The advisory lock that serialises schema creation on PostgreSQL ("norc" in ASCII).
SCHEMA_LOCK_KEY = 0x6E6F7263


def normalise_url(url: str) -> URL:
    """Parse a database URL, choosing the drivers Norc ships with when none is named."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(f"invalid database URL {url!r}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername=f"{parsed.drivername}+pymysql")
    return parsed


def masked(url: URL) -> str:
    """The URL with its password hidden, for messages."""
    return url.render_as_string(hide_password=True)


@attrs.define
class Transaction:
    """A connection inside a transaction, with callbacks to run once it has committed."""

    conn: Connection
    _after_commit: list[Callable[[], None]] = attrs.Factory(list)

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` after a successful commit (never after a rollback)."""
        self._after_commit.append(fn)


class Connections:
    """The connection pools of one database; thread-safe."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.dialect = self.url.get_backend_name()
        self._schema_checked = False
        self._schema_lock = threading.Lock()
        # SQLite has one writer at a time; a writer that finds the lock taken sleeps in
        # SQLite's busy handler (1, 2, 5, 10 ms...), long after the lock is free. Writers
        # of one process queue on this lock instead and go the moment it is released.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        self.engine = self._create_engine()
        # Server databases: a second pool whose connections are in autocommit for good
        # (autocommit_connection, driver_autocommit). Switching a connection of the main
        # pool on each checkout and back on checkin cost 0.25 ms of the PostgreSQL
        # enqueue (measured cold, at 100 calls/s). SQLite has no use for one.
        self._autocommit_engine = (
            self.engine
            if self.dialect == "sqlite"
            else self._create_engine(isolation_level="AUTOCOMMIT")
        )

    # -- engine and schema -----------------------------------------------------------

    def _create_engine(self, **kwargs: Any) -> Engine:
        if self.dialect == "sqlite":
            database = self.url.database or ""
            if database and database != ":memory:":
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        elif self.dialect in ("mysql", "mariadb"):
            kwargs.setdefault("isolation_level", "READ COMMITTED")
            kwargs["pool_recycle"] = 3600
        try:
            engine = sa.create_engine(self.url, **kwargs)
        except (ArgumentError, ImportError) as exc:
            raise ConfigurationError(f"cannot use database URL {masked(self.url)}: {exc}") from None
        if self.dialect == "sqlite":
            _tune_sqlite(engine)
        else:
            _ping_idle_connections(engine)
        return engine

    def ensure_schema(self) -> None:
        """Create the schema on first use; refuse a database at an older revision."""
        if self._schema_checked:
            return
        with self._schema_lock:
            if self._schema_checked:
                return
            from norc.store import migrate

            for attempt in range(3):
                try:
                    # The transaction ends inside the guard: a MariaDB session lock
                    # released before the commit let the next process see the tables
                    # without their revision stamp, and refuse the database.
                    with (
                        self.engine.connect() as conn,
                        self._schema_guard(conn),
                        conn.begin(),
                    ):
                        if self.dialect == "postgresql":
                            # Released by the commit (or rollback) of this transaction.
                            conn.execute(
                                sa.text("SELECT pg_advisory_xact_lock(:key)"),
                                {"key": SCHEMA_LOCK_KEY},
                            )
                        current = migrate.current_revision(conn)
                        head = migrate.head_revision()
                        if current is None and not sa.inspect(conn).has_table(tasks.name):
                            migrate.create_fresh(conn)
                        elif current != head:
                            if current is not None and not migrate.known_revision(current):
                                raise SchemaNewer(masked(self.url), current, head)
                            raise SchemaOutdated(masked(self.url), current, head)
                    break
                except OperationalError as exc:
                    if _is_connect_error(exc) or attempt == 2:
                        raise DatabaseUnreachable(masked(self.url), _reason(exc)) from None
                except SADatabaseError:
                    # Another process created the schema at the same moment (MariaDB's
                    # DDL commits on its own): look again, it is there now.
                    if attempt == 2:
                        raise
            self._schema_checked = True

    @contextlib.contextmanager
    def _schema_guard(self, conn: Connection) -> Iterator[None]:
        """One process at a time checks and creates the schema, around the transaction
        that does it.

        Several daemons often start together on a new database; without this their
        CREATE TABLEs race and all but one fail. SQLite's BEGIN IMMEDIATE already
        serialises, and PostgreSQL takes a transaction-scoped advisory lock inside that
        transaction (see :meth:`ensure_schema`); MariaDB/MySQL, whose DDL commits on its
        own, take a named session lock here, held until the transaction has committed.
        """
        if self.dialect not in ("mysql", "mariadb"):
            yield
            return
        conn.execute(sa.text("SELECT GET_LOCK('norc_schema', 120)"))
        conn.commit()  # end the transaction the statement began: the caller begins its own
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT RELEASE_LOCK('norc_schema')"))
            conn.commit()

    @contextlib.contextmanager
    def connection_errors(self) -> Iterator[None]:
        """Raise a refused or lost connection as :class:`DatabaseUnreachable`."""
        try:
            yield
        except OperationalError as exc:
            if _is_connect_error(exc):
                raise DatabaseUnreachable(masked(self.url), _reason(exc)) from None
            raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite); commits on exit."""
        self.ensure_schema()
        tx = None
        with self.connection_errors(), self._write_lock, self.engine.begin() as conn:
            tx = Transaction(conn)
            yield tx
        if tx is not None:
            # Every callback runs even if one fails (an SQS send, say); the first error
            # is raised afterwards, once the others had their chance.
            errors: list[Exception] = []
            for fn in tx._after_commit:
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - re-raised below
                    errors.append(exc)
            if errors:
                raise errors[0]

    def autocommit_connection(self) -> Connection:
        """An open autocommit connection that the caller keeps and closes (server databases).

        For a loop that runs one kind of statement over and over from one thread (the
        PostgreSQL claim, which also LISTENs on it): no checkout and check-in per
        statement.
        """
        self.ensure_schema()
        with self.connection_errors():
            return self._autocommit_engine.connect()

    @contextlib.contextmanager
    def driver_autocommit(self) -> Iterator[Any]:
        """The driver's own connection (psycopg's on PostgreSQL), in autocommit, from the
        autocommit pool: for a hot statement of fixed text that needs none of SQLAlchemy's
        work per execution; one statement, which commits on its own, saves BEGIN and
        COMMIT. Driver errors come out as SQLAlchemy's (a lost connection leaves the pool).

        The PostgreSQL enqueue runs this way: SQLAlchemy's checkout, execution and result
        cost 0.6 ms of its 2.5 ms, measured at 100 calls/s (Python that has gone cold
        between calls runs several times slower than in a loop).
        """
        self.ensure_schema()
        with self.driver_errors(None):
            fairy = self._autocommit_engine.raw_connection()
        try:
            with self.driver_errors(fairy):
                yield fairy.driver_connection
        finally:
            fairy.close()

    @contextlib.contextmanager
    def driver_errors(self, pooled: PoolProxiedConnection | None) -> Iterator[None]:
        """For statements run on the driver's connection of ``pooled`` (None: while
        connecting): its errors raised as SQLAlchemy raises them, the connection
        invalidated if it was lost, and :meth:`connection_errors` applied."""
        dialect = self._autocommit_engine.dialect
        error = dialect.loaded_dbapi.Error
        with self.connection_errors():
            try:
                yield
            except error as exc:
                lost = pooled is None or dialect.is_disconnect(exc, pooled.dbapi_connection, None)
                if pooled is not None and lost:
                    pooled.invalidate(exc)
                raise sa.exc.DBAPIError.instance(
                    None, None, exc, error, connection_invalidated=lost, dialect=dialect
                ) from exc

    @contextlib.contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only connection (a deferred transaction on SQLite, so it takes no lock)."""
        self.ensure_schema()
        with self.connection_errors(), self.engine.connect() as conn:
            yield conn.execution_options(norc_read=True)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        if self._autocommit_engine is not self.engine:
            self._autocommit_engine.dispose()


def driver_sql(statement: sa.ClauseElement, engine: Engine) -> tuple[str, dict[str, Any]]:
    """A statement compiled once for ``engine``'s driver, to run on the driver's own
    connection: its text in the driver's parameter style, and the values of the
    parameters it fixes itself (its literals). The caller binds the rest, converted as
    their column types would (times as naive UTC: ``schema.naive_utc``)."""
    compiled = statement.compile(dialect=engine.dialect)
    return str(compiled), {k: v for k, v in compiled.params.items() if v is not None}


#: A pooled server connection unused for longer than this (seconds) is pinged before
#: it is handed out: a server restart or an idle timeout may have closed it meanwhile.
PING_AFTER_IDLE = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """Like ``pool_pre_ping``, but only for connections that sat idle in the pool.

    A ping is a round trip (~0.2 ms here) on every checkout; the claim loop, the
    recorder and a busy enqueuer check a connection out hundreds of times a second,
    and for them the ping was a tenth of the enqueue→start latency. A connection in
    steady use that the server closed fails its statement instead: SQLAlchemy then
    discards it and the callers' retry paths (claim, record, heartbeat) take over.
    """

    @event.listens_for(engine, "checkin")
    def _note_use(dbapi_connection: Any, record: Any) -> None:
        record.info["norc_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("norc_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return  # just connected, or in steady use
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # any failure: this connection is gone
            # The pool discards the connection and hands out a new one.
            raise sa.exc.DisconnectionError(str(exc)) from exc


def _tune_sqlite(engine: Engine) -> None:
    """WAL, a generous busy timeout, and explicit BEGINs that we choose.

    pysqlite's own transaction handling defers BEGIN and cannot take the write lock up
    front; writers then deadlock-retry under contention. We take control: autocommit at
    the driver, ``BEGIN IMMEDIATE`` for writes, plain ``BEGIN`` for reads.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("norc_read"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


_CONNECT_ERRORS = re.compile(
    r"connection refused|could not connect|can't connect|unable to open database|"
    r"name or service not known|could not translate host|timeout expired|"
    r"connection to server .* failed|lost connection|server closed the connection|"
    r"unknown database|does not exist|access denied",
    re.IGNORECASE,
)


def _is_connect_error(exc: SADatabaseError) -> bool:
    return bool(exc.connection_invalidated or _CONNECT_ERRORS.search(str(exc.orig)))


def _reason(exc: SADatabaseError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says the database is away or busy for now, so the same work may
    succeed if retried: a refused or lost connection, a lock wait, a deadlock, a server
    shutting down. Anything else (a refused statement, a constraint, a bug, a plugin
    raising) is a fault of the work itself: retrying it would fail the same way."""
    from sqlalchemy.exc import DBAPIError, InterfaceError

    if isinstance(exc, DatabaseUnreachable | OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)
