"""Database servers that tests start themselves."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from norc.testing import free_port


def create_database(server_url: str, name: str) -> None:
    """Create database ``name`` on the PostgreSQL or MariaDB server that ``server_url``
    reaches (through any database there), unless it exists."""
    from norc.store.connections import normalise_url

    engine = sa.create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                exists = conn.execute(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
                ).first()
                if not exists:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS `{name}`"))
    finally:
        engine.dispose()


class PrivatePostgres:
    """A throw-away PostgreSQL cluster owned by the postgres user."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins or not shutil.which("runuser"):
            pytest.fail("PostgreSQL server binaries (pg_ctl) or runuser are missing")
        self.bin = Path(bins[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="norc-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres"
        )

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=120
        )

    def start(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.dir / "data"),
            "-w",
            "-l",
            str(self.dir / "log"),
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-w", "stop", "-m", "fast"
        )

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
