"""Fixtures shared by every test folder (core and plugin distributions).

Databases: every test that takes ``db_url`` or ``app`` runs on SQLite, and also on
PostgreSQL and MariaDB when ``NORC_TEST_POSTGRES_URL`` / ``NORC_TEST_MYSQL_URL`` are
set. A server named by those variables that cannot be reached FAILS the test: CI sets
them, so a missing server can never pass as a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from norc.testing import free_port
from tests.servers import PrivatePostgres, create_database

BACKENDS = {
    "sqlite": None,
    "postgresql": "NORC_TEST_POSTGRES_URL",
    "mysql": "NORC_TEST_MYSQL_URL",
}


def _backends() -> list[str]:
    return [name for name, var in BACKENDS.items() if var is None or os.environ.get(var)]


def reset_database(url: str) -> None:
    """Drop every Norc table from a server database, so each test starts empty."""
    from norc.store.connections import normalise_url
    from norc.store.schema import metadata

    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn)
            conn.execute(sa.text("DROP TABLE IF EXISTS norc_alembic_version"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"test database {url} is set but unreachable: {exc.orig}")
    finally:
        engine.dispose()


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the database backend this test runs on."""
    return str(request.param)


_WORKER_DATABASES: dict[str, str] = {}


def server_url(var: str) -> str:
    """The database URL named by ``var``; under pytest-xdist, a database of this worker's
    own on the same server (``test_gw0``, …), created when missing, so that workers never
    drop each other's tables."""
    url = os.environ[var]
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    if url not in _WORKER_DATABASES:
        _WORKER_DATABASES[url] = _worker_database(url, worker)
    return _WORKER_DATABASES[url]


def _worker_database(url: str, worker: str) -> str:
    from norc.store.connections import normalise_url

    parsed = sa.engine.make_url(normalise_url(url))
    name = f"{parsed.database}_{worker}"
    try:
        create_database(url, name)
    except sa.exc.OperationalError as exc:
        pytest.fail(f"test database {url} is set but unreachable: {exc.orig}")
    return parsed.set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> str:
    """A URL of an empty database on the current backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'norc.db'}"
    url = server_url(BACKENDS[backend] or "")
    reset_database(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL of an empty SQLite database, for tests about behaviour no backend changes."""
    return f"sqlite:///{tmp_path / 'norc.db'}"


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """An empty log directory."""
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def app(db_url: str, log_dir: Path) -> Iterator[object]:
    """A Norc handle on an empty database of the current backend."""
    import norc

    handle = norc.Norc(db_url, log_dir=log_dir)
    yield handle
    handle.close()


@pytest.fixture
def sqlite_app(sqlite_url: str, log_dir: Path) -> Iterator[object]:
    """A Norc handle on an empty SQLite database."""
    import norc

    handle = norc.Norc(sqlite_url, log_dir=log_dir)
    yield handle
    handle.close()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's standalone server (real HTTP: SQS and S3) on a free port, for this session."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start on port {port}")
            time.sleep(0.1)
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    yield url
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server, started, and removed after the test: one that a test
    may stop and start again without disturbing the shared servers."""
    server = PrivatePostgres()
    server.start()
    yield server
    server.destroy()
