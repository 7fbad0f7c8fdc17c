"""Shared helpers of the benchmarks: databases, the machine, statistics and tables.

Imported by ``bench/queue.py`` and ``bench/scheduler.py`` after they take their own
folder off the front of ``sys.path`` (``bench/queue.py`` would otherwise shadow the
standard library's ``queue`` module, in the benchmark and in every worker process).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

#: Default server URLs: the ``norc_bench`` databases (never ``test``, which the test
#: suite empties). Override with NORC_BENCH_POSTGRES_URL / NORC_BENCH_MYSQL_URL.
DEFAULT_URLS = {
    "postgresql": "postgresql://postgres@127.0.0.1:5432/norc_bench",
    "mariadb": "mysql://root@127.0.0.1:3306/norc_bench",
}
ALL_BACKENDS = ("sqlite", "postgresql", "mariadb")
FINAL = ("SUCCESS", "FAILURE", "ERROR", "TIMEDOUT", "INTERRUPTED", "SKIPPED", "HANDLED")


def fix_sys_path(script_file: str) -> None:
    """Take ``bench/`` off the front of sys.path (it would shadow stdlib ``queue``)."""
    here = str(Path(script_file).resolve().parent)
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != here]
    sys.path.append(here)


def neutral_cwd() -> str:
    """A working directory for child processes that holds no ``norc`` package.

    Worker processes start with ``python -m``, which puts their working directory first
    on sys.path: started from the repository, they would import its ``norc/`` even when
    the benchmark runs another copy (a snapshot on PYTHONPATH).
    """
    path = Path(tempfile.gettempdir()) / "norc-bench"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def server_url(backend: str) -> str:
    """The URL of the benchmark database on a server backend."""
    var = {"postgresql": "NORC_BENCH_POSTGRES_URL", "mariadb": "NORC_BENCH_MYSQL_URL"}[backend]
    url = os.environ.get(var) or DEFAULT_URLS[backend]
    if sa.engine.make_url(url).database in (None, "", "test"):
        raise SystemExit(f"refusing to benchmark on database {url!r}: use a dedicated one")
    return url


def fresh_database(backend: str, workdir: Path, tag: str) -> str:
    """An empty database on ``backend``: a new SQLite file, or the server one emptied."""
    if backend == "sqlite":
        path = workdir / f"{tag}.db"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    url = server_url(backend)
    drop_norc_tables(url)
    return url


def drop_norc_tables(url: str) -> None:
    """Drop Norc's tables (and the benchmarks' own) from a server database."""
    from norc.store.connections import normalise_url
    from norc.store.schema import metadata

    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn)
            for table in ("norc_alembic_version", "bench_raw_claims"):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    finally:
        engine.dispose()


def sqlalchemy_engine(url: str) -> sa.Engine:
    """A plain engine on ``url`` (Norc's driver choice), for the benchmark's own reads."""
    from norc.store.connections import normalise_url

    return sa.create_engine(normalise_url(url))


def fresh_dir(path: Path) -> Path:
    """``path``, emptied.

    The old contents are moved aside and deleted only when the benchmark exits: deleting
    tens of thousands of log files between runs made the next run's file creation up to
    20x slower on this machine (ext4 mounted with ``discard``), which is noise, not Norc.
    """
    if path.exists():
        trash = path.parent / ".trash"
        trash.mkdir(exist_ok=True)
        path.rename(trash / f"{path.name}-{uuid.uuid4().hex}")
        if not _TRASH:
            atexit.register(_empty_trash)
        _TRASH.add(trash)
    path.mkdir(parents=True)
    return path


_TRASH: set[Path] = set()


def _empty_trash() -> None:
    for trash in _TRASH:
        shutil.rmtree(trash, ignore_errors=True)


# -- statistics ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; nan when empty."""
    if not values:
        return float("nan")
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    """The median; nan when empty."""
    return percentile(values, 50)


# -- output ----------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: numbers rounded, thousands separated; None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def print_table(
    title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]], notes: Sequence[str] = ()
) -> str:
    """Print an aligned plain-text table (numbers right-aligned); returns the text."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    lines = [title, "=" * len(title)]
    lines.append(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 or not _numeric(c) else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    lines.extend(notes)
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    return text


def _numeric(cell: str) -> bool:
    return (
        cell.replace(",", "")
        .replace(".", "")
        .replace("-", "")
        .replace("%", "")
        .replace("+", "")
        .replace("x", "")
        .isdigit()
        or cell == "-"
    )


def progress(message: str) -> None:
    """A progress line on stderr (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def save_json(path: str | None, payload: dict[str, Any]) -> None:
    """Write the raw results (for docs/plots) when asked to."""
    if path:
        Path(path).write_text(json.dumps(payload, indent=1, default=str) + "\n")


# -- the machine -----------------------------------------------------------------------


def machine_info(backends: Sequence[str]) -> dict[str, str]:
    """nproc, CPU model, RAM and the versions that matter."""
    info = {"nproc": str(os.cpu_count())}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next(
            (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if "model name" in ln),
            "?",
        )
        mhz = next(
            (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if "cpu MHz" in ln), "?"
        )
        info["cpu"] = f"{model} ({mhz} MHz)"
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        info["ram"] = f"{mem_kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, StopIteration):
        pass
    info["kernel"] = platform.release()
    info["calibration"] = f"{calibrate() * 1000:.0f} ms for 2M Python additions (best of 3)"
    info["pipe round trip"] = f"{pipe_round_trip() * 1e6:.1f} µs between two processes (best of 3)"
    import norc

    info["norc code"] = str(Path(norc.__file__).resolve().parent)
    info["python"] = platform.python_version()
    info["sqlite"] = sqlite3.sqlite_version
    info["sqlalchemy"] = sa.__version__
    for backend in backends:
        if backend == "sqlite":
            continue
        try:
            engine = sqlalchemy_engine(server_url(backend))
            with engine.connect() as conn:
                info[backend] = str(conn.execute(sa.text("SELECT version()")).scalar_one())
            engine.dispose()
        except Exception as exc:  # noqa: BLE001 - informational only
            info[backend] = f"unreachable: {exc}"
    with contextlib.suppress(OSError):
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "norc", "norc_command"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.splitlines()
        info["repo HEAD"] = f"{head} ({len(changed)} paths under norc/ differ from it)"
    info["load avg"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return info


def print_machine(info: dict[str, str]) -> None:
    """The machine block at the top of a run."""
    print("Machine")
    print("=======")
    for key, value in info.items():
        print(f"{key:12} {value}")
    print(flush=True)


# -- CPU accounting --------------------------------------------------------------------

DB_SERVER_COMMANDS = ("postgres", "mariadbd", "mysqld")


def cpu_snapshot(root_pid: int | None = None) -> dict[str, Any]:
    """CPU seconds so far of every process, classified: ``norc`` (``root_pid`` and its
    descendants; ``workers`` among them: worker processes), ``db`` (database servers),
    ``other``; and the machine's busy/total time. Compare two with :func:`cpu_delta`."""
    root = root_pid or os.getpid()
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[str, int, float]] = {}
    for path in Path("/proc").iterdir():
        entry = path.name
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        procs[int(entry)] = (comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    classified: dict[int, tuple[str, float, int]] = {}
    for pid, (comm, _ppid, seconds) in procs.items():
        p, seen = pid, 0
        while p and p != root and p in procs and seen < 64:
            p, seen = procs[p][1], seen + 1
        if p == root:
            kind = "norc"
            try:
                if b"norc.executor.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    kind = "workers"
            except OSError:
                pass
            classified[pid] = (kind, seconds, _context_switches(pid))
        elif comm in DB_SERVER_COMMANDS:
            classified[pid] = ("db", seconds, 0)
        else:
            classified[pid] = ("other", seconds, 0)
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return {
        "procs": classified,
        "busy": (sum(values[:8]) - idle) / tick,
        "total": sum(values[:8]) / tick,
        "wall": time.monotonic(),
    }


def _context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of a process."""
    total = 0
    try:
        tasks = [p.name for p in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return 0
    for tid in tasks:
        try:
            for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def calibrate() -> float:
    """Seconds for a fixed pure-Python loop (best of 3): how fast this CPU was today."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return best


def pipe_round_trip(count: int = 2000) -> float:
    """Seconds per one-byte round trip between two processes over pipes (best of 3 runs
    of ``count``). It follows the cost of waking a process, which a pure-Python loop
    (:func:`calibrate`) does not see: on this project's VMs the two drift apart when
    a neighbour loads the host."""
    from_parent, to_child = os.pipe()
    from_child, to_parent = os.pipe()
    pid = os.fork()
    if pid == 0:  # the echo: it keeps only its own ends, so it sees the end of file
        try:
            os.close(to_child)
            os.close(from_child)
            while os.read(from_parent, 1):
                os.write(to_parent, b"x")
        finally:
            os._exit(0)
    os.close(from_parent)
    os.close(to_parent)
    best = float("inf")
    try:
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(count):
                os.write(to_child, b"x")
                os.read(from_child, 1)
            best = min(best, (time.perf_counter() - t0) / count)
    finally:
        os.close(to_child)
        os.waitpid(pid, 0)
        os.close(from_child)
    return best


def cpu_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """CPU seconds spent between two snapshots by each class of process (per process:
    its time at the end minus its time at the start; a process that ended in between is
    not counted, one that started is counted whole); ``util`` is the machine's busy share
    (0-1); ``norc`` includes ``workers``."""
    d = {"norc": 0.0, "workers": 0.0, "db": 0.0, "other": 0.0, "switches": 0.0}
    for pid, (kind, seconds, switches) in after["procs"].items():
        _, seconds0, switches0 = before["procs"].get(pid, (kind, 0.0, 0))
        d[kind] += seconds - seconds0
        if kind in ("norc", "workers"):
            d["switches"] += switches - switches0
    d["norc"] += d["workers"]
    for key in ("busy", "total", "wall"):
        d[key] = after[key] - before[key]
    d["util"] = d["busy"] / d["total"] if d["total"] > 0 else float("nan")
    return d


def wait_for_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (up to ``max_wait`` s) until the machine is nearly idle: busy share of all
    cores under ``threshold`` over half a second. Returns the last busy share seen."""
    if max_wait <= 0:
        return float("nan")
    deadline = time.monotonic() + max_wait
    while True:
        before = cpu_snapshot()
        time.sleep(0.5)
        share = cpu_delta(before, cpu_snapshot())["util"]
        if share < threshold or time.monotonic() >= deadline:
            if share >= threshold:
                progress(f"machine still busy ({100 * share:.0f}%): measuring anyway")
            return share
        time.sleep(1.0)
