# ruff: noqa: E402  (sys.path is fixed before the imports, see below)
"""Queue benchmark: throughput, enqueue→start latency, raw database limits, growth.

    python bench/queue.py              # the full run (about 15 minutes on 2 cores)
    python bench/queue.py --quick      # a smoke run (under 2 minutes)
    python bench/queue.py --backends sqlite --sections throughput,latency --n 20000

Every figure comes from the database rows Norc wrote (``started_at``, ``ended_at``,
``enqueued_at``), and every throughput run is verified by counting the SUCCESS rows.
Executors run in separate processes (``executor-child``, the same file) or embedded
in the benchmark process (mode ``embedded``). Server databases are ``norc_bench`` on
127.0.0.1 (PostgreSQL and MariaDB); SQLite files go under ``--workdir``.

Sections:
  throughput  N no-op instances, enqueue_many, drained by 1/2/4 executor processes and
              embedded; both isolations
  command     the same with CommandTask("true") (N/5 instances)
  latency     enqueue→start latency, one enqueue at a time at a steady rate into idle
              executors, embedded and cross-process; on PostgreSQL also Norc's own two
              statements run from bare psycopg (the floor under Norc's rows)
  raw         the database's own limit: a bare SKIP LOCKED claim loop, two processes
  isolation   per-instance cost of a reusable worker process vs a thread
  batching    fixed and per-item cost of claim / read / record transactions (batch
              1, 8, 64), and throughput at higher concurrency (bigger claims)
  history     claim/finish/enqueue latency with 0, 100k and 1M finished instances
  queues      processing rate with 1, 10 and 100 queues
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the standard library's `queue` here and in every worker
# process (workers inherit our sys.path): take bench/ off the front first.
_here = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _here]
sys.path.append(_here)

import argparse
import contextlib
import json
import os
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import benchlib as bl
import sqlalchemy as sa

import norc
from norc.abc import Claimant
from norc.store.schema import instances as t_instances
from norc.store.schema import utcnow
from norc.testing import NoopTask

SECTIONS = (
    "throughput",
    "command",
    "latency",
    "raw",
    "isolation",
    "batching",
    "history",
    "queues",
)
NOOP = "bench-noop"
#: Seconds to wait, before each measured run, for other processes to leave the machine
#: idle (this machine is shared); set by --quiet-wait.
QUIET_WAIT = 30.0
TRUE = "bench-true"


# -- helpers ---------------------------------------------------------------------------


def make_app(url: str, log_dir: Path) -> norc.Norc:
    """A handle with the two benchmark tasks saved."""
    from norc_command import CommandTask

    app = norc.Norc(url, log_dir=log_dir)
    existing = {t.name for t in app.tasks()}
    if NOOP not in existing:
        app.save_task(NoopTask(name=NOOP))
    if TRUE not in existing:
        app.save_task(CommandTask(name=TRUE, command="true"))
    return app


def count_final(app: norc.Norc, lo: int, hi: int) -> int:
    """Instances with ids in [lo, hi] that have ended."""
    with app.db.reading() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    t_instances.c.id.between(lo, hi), t_instances.c.status.in_(bl.FINAL)
                )
            ).scalar_one()
        )


def wait_final(app: norc.Norc, ids: list[int], timeout: float) -> bool:
    """Wait until every instance in ``ids`` (a contiguous run) has ended."""
    lo, hi = min(ids), max(ids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count_final(app, lo, hi) >= len(ids):
            return True
        time.sleep(0.05)
    return False


def instance_rows(app: norc.Norc, ids: list[int]) -> list[Any]:
    """(id, status, enqueued_at, started_at, ended_at, executor_id) of these instances."""
    wanted = set(ids)
    c = t_instances.c
    with app.db.reading() as conn:
        rows = conn.execute(
            sa.select(c.id, c.status, c.enqueued_at, c.started_at, c.ended_at, c.executor_id)
            .where(c.id.between(min(ids), max(ids)))
            .order_by(c.id)
        ).all()
    return [r for r in rows if r.id in wanted]


def _finish_row(instance_id: int, executor_id: int) -> dict[str, Any]:
    """A SUCCESS outcome as the recorder hands it to ``Database.finish_instances``."""
    now = utcnow()
    return {
        "id": instance_id,
        "executor_id": executor_id,
        "status": "SUCCESS",
        "started_at": now,
        "ended_at": now,
        "exit_code": None,
        "revision": None,
        "error": None,
        "log_key": f"tasks/x/{instance_id}",
        "pid": 1,
    }


def secs(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


def warm_workers(executor: Any) -> None:
    """Start every slot's worker process now, not at its first instance."""
    for slot in executor._slots:
        if slot.worker is not None:
            slot.worker.ensure()


class Executors:
    """``processes`` executor processes (0: one executor embedded in this process)."""

    def __init__(
        self,
        app: norc.Norc,
        url: str,
        log_dir: Path,
        *,
        processes: int,
        concurrency: int,
        isolation: str,
        queue: str = "default",
    ) -> None:
        self.app, self.url, self.log_dir = app, url, log_dir
        self.processes, self.concurrency, self.isolation = processes, concurrency, isolation
        self.queue = queue
        self.embedded: Any = None
        self.children: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Executors:
        if self.processes == 0:
            self.embedded = self.app.executor(
                queue=self.queue, concurrency=self.concurrency, isolation=self.isolation
            )
            self.embedded.start()
            warm_workers(self.embedded)
            return self
        for _ in range(self.processes):
            self.children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "executor-child",
                        "--url",
                        self.url,
                        "--log-dir",
                        str(self.log_dir),
                        "--queue",
                        self.queue,
                        "--concurrency",
                        str(self.concurrency),
                        "--isolation",
                        self.isolation,
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=bl.neutral_cwd(),
                )
            )
        for child in self.children:
            line = child.stdout.readline() if child.stdout else ""
            if not line.startswith("ready"):
                self.__exit__(None, None, None)
                raise RuntimeError(f"executor process failed to start: {line!r}")
        return self

    def stats(self) -> dict[str, int]:
        """The executors' round-trip counters (``Executor.stats``), summed."""
        if self.embedded is not None:
            return dict(self.embedded.stats)
        total: dict[str, int] = {}
        for child in self.children:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("stats\n")
            child.stdin.flush()
            for key, value in json.loads(child.stdout.readline()).items():
                total[key] = total.get(key, 0) + value
        return total

    def __exit__(self, *exc: object) -> None:
        if self.embedded is not None:
            self.embedded.stop(timeout=120)
            self.embedded = None
        for child in self.children:
            with contextlib.suppress(OSError):
                assert child.stdin is not None
                child.stdin.write("stop\n")
                child.stdin.close()
        for child in self.children:
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children = []


def executor_child(args: argparse.Namespace) -> None:
    """One executor process: start, warm the workers, say ready, stop on a line or EOF."""
    app = norc.Norc(args.url, log_dir=args.log_dir)
    executor = app.executor(
        queue=args.queue, concurrency=args.concurrency, isolation=args.isolation
    )
    executor.start()
    warm_workers(executor)
    print("ready", executor.id, flush=True)
    for line in sys.stdin:  # "stats" asks for the counters; "stop" or EOF ends it
        if line.strip() != "stats":
            break
        print(json.dumps(executor.stats), flush=True)
    executor.stop(timeout=120)
    app.close()


def mode_name(processes: int) -> str:
    return "embedded" if processes == 0 else f"{processes} proc"


# -- throughput ------------------------------------------------------------------------


def run_throughput(
    backend: str,
    workdir: Path,
    *,
    processes: int,
    isolation: str,
    task: str,
    n: int,
    concurrency: int,
) -> dict[str, Any]:
    """Drain ``n`` instances with the given executors; figures from the database rows."""
    tag = f"tp-{backend}"
    bl.wait_for_quiet(QUIET_WAIT)
    # This VM's speed changes from one minute to the next: each run says how fast it was.
    calibration_ms, pipe_us = 1000 * bl.calibrate(), 1e6 * bl.pipe_round_trip()
    url = bl.fresh_database(backend, workdir, tag)
    log_dir = bl.fresh_dir(workdir / f"logs-{tag}")
    app = make_app(url, log_dir)
    result: dict[str, Any] = {
        "backend": backend,
        "mode": mode_name(processes),
        "processes": processes,
        "isolation": isolation,
        "task": task,
        "n": n,
        "concurrency": concurrency,
        "calibration_ms": calibration_ms,
        "pipe_us": pipe_us,
    }
    try:
        with Executors(
            app,
            url,
            log_dir,
            processes=processes,
            concurrency=concurrency,
            isolation=isolation,
        ) as executors:
            warm = app.enqueue_many(task, max(50, 4 * concurrency * max(1, processes)))
            if not wait_final(app, warm, 120):
                raise RuntimeError("warm-up did not finish")
            counters = executors.stats()
            started = time.perf_counter()
            ids = app.enqueue_many(task, n)
            result["enqueue_s"] = time.perf_counter() - started
            cpu_before = bl.cpu_snapshot()
            done = wait_final(app, ids, max(120.0, n / 50))
            cpu = bl.cpu_delta(cpu_before, bl.cpu_snapshot())
            result["wall_s"] = time.perf_counter() - started
            counters = {k: v - counters.get(k, 0) for k, v in executors.stats().items()}
        rows = instance_rows(app, ids)
    finally:
        app.close()
    first = min(r.started_at for r in rows if r.started_at)
    last = max(r.ended_at for r in rows if r.ended_at)
    window = secs(first, last)
    result.update(
        complete=done,
        success=sum(1 for r in rows if r.status == "SUCCESS"),
        window_s=window,
        rate=n / window if window > 0 else float("nan"),
        enqueue_rate=n / result["enqueue_s"],
        # The executors' own counters (Executor.stats) over the drain.
        claims=counters.get("claims", 0),
        writes=counters.get("writes", 0),
        executors=len({r.executor_id for r in rows}),
        # CPU from the end of enqueue_many to the last end: the machine's busy share, and
        # CPU-µs per instance in Norc's processes (benchmark, executors, workers) and in
        # the database server.
        cpu_util=cpu["util"],
        norc_cpu_us=1e6 * cpu["norc"] / n,
        worker_cpu_us=1e6 * cpu["workers"] / n,
        switches=cpu["switches"] / n,
        db_cpu_us=1e6 * cpu["db"] / n,
        # Other processes' CPU share of the machine meanwhile: a noisy neighbour shows here.
        other_util=max(0.0, cpu["busy"] - cpu["norc"] - cpu["db"]) / cpu["total"]
        if cpu["total"] > 0
        else float("nan"),
    )
    result["verified"] = result["success"] == n
    bl.fresh_dir(log_dir)
    return result


def throughput_section(
    args: argparse.Namespace, task: str, n: int, runs: list[tuple[str, int]]
) -> list[dict[str, Any]]:
    """One run per backend and (isolation, executor processes) in ``runs``."""
    results = []
    for backend in args.backends:
        for isolation, processes in runs:
            if isolation in args.isolations:
                bl.progress(f"throughput {backend} {mode_name(processes)} {isolation} {task} n={n}")
                results.append(
                    run_throughput(
                        backend,
                        args.workdir,
                        processes=processes,
                        isolation=isolation,
                        task=task,
                        n=n,
                        concurrency=args.concurrency,
                    )
                )
    title = (
        f"Throughput: {'no-op' if task == NOOP else 'CommandTask true'} instances"
        f" (N={n:,}, concurrency {args.concurrency} per executor)"
    )
    bl.print_table(
        title,
        [
            "backend",
            "executors",
            "isolation",
            "enqueue/s",
            "processed/s",
            "window s",
            "SUCCESS",
            "verified",
            "claims",
            "per claim",
            "writes",
            "per write",
            "CPU busy",
            "norc µs/inst",
            "of which workers",
            "db µs/inst",
            "ctx sw/inst",
            "others",
            "cal ms",
            "pipe µs",
        ],
        [
            [
                r["backend"],
                r["mode"],
                r["isolation"],
                r["enqueue_rate"],
                r["rate"],
                r["window_s"],
                r["success"],
                r["verified"],
                r["claims"],
                r["n"] / r["claims"] if r["claims"] else float("nan"),
                r["writes"],
                r["n"] / r["writes"] if r["writes"] else float("nan"),
                f"{100 * r['cpu_util']:.0f}%",
                r["norc_cpu_us"],
                r["worker_cpu_us"],
                r["db_cpu_us"],
                r["switches"],
                f"{100 * r['other_util']:.0f}%",
                r["calibration_ms"],
                r["pipe_us"],
            ]
            for r in results
        ],
        [
            "enqueue/s: one enqueue_many(N) call (one transaction). processed/s: N / (max"
            " ended_at - min started_at).",
            "verified: SUCCESS rows counted in the database = N. claims/writes: the executors'"
            " claim and recorder round trips during the drain (Executor.stats).",
            "CPU busy: share of all cores busy during the drain; norc/db µs/inst: CPU time of"
            " Norc's processes (incl. workers) / the database server, per instance; ctx sw: context"
            " switches of Norc's threads per instance;",
            "others: the machine share used by unrelated processes meanwhile (noise). cal ms /"
            " pipe µs: the Python loop and the pipe round trip of the header, measured just"
            " before the run (lower is a faster machine).",
        ],
    )
    return results


def single_enqueue_rate(backend: str, workdir: Path, count: int) -> dict[str, Any]:
    """app.enqueue() one instance per call (one transaction each), no executor running."""
    url = bl.fresh_database(backend, workdir, f"enq-{backend}")
    log_dir = bl.fresh_dir(workdir / f"logs-enq-{backend}")
    app = make_app(url, log_dir)
    try:
        app.enqueue(NOOP)
        started = time.perf_counter()
        for _ in range(count):
            app.enqueue(NOOP)
        elapsed = time.perf_counter() - started
        batches = []
        for _ in range(5):
            started = time.perf_counter()
            app.enqueue_many(NOOP, 100)
            batches.append(time.perf_counter() - started)
    finally:
        app.close()
    return {
        "backend": backend,
        "single_rate": count / elapsed,
        "single_ms": 1000 * elapsed / count,
        "batch100_rate": 100 / bl.median(batches),
    }


# -- latency ---------------------------------------------------------------------------


def run_latency(
    backend: str, workdir: Path, *, processes: int, rate: float, seconds: float
) -> dict[str, Any]:
    """Enqueue one at a time at ``rate``/s into idle executors; started_at - enqueued_at."""
    tag = f"lat-{backend}"
    bl.wait_for_quiet(QUIET_WAIT)
    url = bl.fresh_database(backend, workdir, tag)
    log_dir = bl.fresh_dir(workdir / f"logs-{tag}")
    app = make_app(url, log_dir)
    count = int(rate * seconds)
    try:
        with Executors(app, url, log_dir, processes=processes, concurrency=4, isolation="process"):
            warm = [app.enqueue(NOOP) for _ in range(20)]
            wait_final(app, warm, 60)
            time.sleep(0.5)  # idle: pollers have backed off to their longest interval
            ids, called = [], {}
            start = time.perf_counter()
            for i in range(count):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                at = time.time()  # the wall clock, as the workers stamp started_at
                ids.append(app.enqueue(NOOP))
                called[ids[-1]] = at
            wait_final(app, ids, 60)
        rows = instance_rows(app, ids)
    finally:
        app.close()
    lat = [1000 * secs(r.enqueued_at, r.started_at) for r in rows if r.started_at]
    from_call = [1000 * (r.started_at.timestamp() - called[r.id]) for r in rows if r.started_at]
    bl.fresh_dir(log_dir)
    wake = {
        "postgresql": "LISTEN/NOTIFY",
        "sqlite": "data_version",
        "mariadb": "polling",
    }[backend]
    return {
        "backend": backend,
        "mode": mode_name(processes),
        "wakeup": "in-process" if processes == 0 else wake,
        "count": len(lat),
        "p50": bl.percentile(lat, 50),
        "p95": bl.percentile(lat, 95),
        "p99": bl.percentile(lat, 99),
        "max": max(lat) if lat else float("nan"),
        "call_p50": bl.percentile(from_call, 50),
        "success": sum(1 for r in rows if r.status == "SUCCESS"),
    }


def run_latency_floor(workdir: Path, *, rate: float, seconds: float) -> dict[str, Any]:
    """PostgreSQL: Norc's own enqueue and claim statements from bare psycopg, in two
    processes (the claim run on NOTIFY, on the LISTEN connection), timed from before
    the enqueue to the claim's rows. What the two statements cost on this machine,
    without Norc's Python around them: the floor under the latency rows of Norc.
    The statements and their parameters are dbqueue's own (``create_and_push_sql``,
    ``claim_sql``)."""
    bl.wait_for_quiet(QUIET_WAIT)
    url = bl.fresh_database("postgresql", workdir, "lat-floor")
    from norc.plugins.dbqueue import DBQueue

    app = make_app(url, bl.fresh_dir(workdir / "logs-lat-floor"))
    queue = app.queue("default")
    assert isinstance(queue, DBQueue)
    count = int(rate * seconds)
    child = subprocess.Popen(
        [sys.executable, __file__, "floor-claimer", "--url", url, "--count", str(count)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=bl.neutral_cwd(),
    )
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        raise RuntimeError("the floor's claimer did not start")
    conn = _raw_connect("postgresql", url)
    enqueued: dict[int, float] = {}
    try:
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            at = time.time()
            row = conn.execute(*queue.create_and_push_sql(NOOP, 1, 0)).fetchone()
            enqueued[int(row[1][0])] = at
    finally:
        conn.close()
        app.close()
    claimed = {int(k): v for k, v in json.loads(child.communicate(timeout=180)[0]).items()}
    lat = [1000 * (claimed[i] - at) for i, at in enqueued.items() if i in claimed]
    return {
        "backend": "postgresql",
        "mode": "bare SQL",
        "wakeup": "LISTEN/NOTIFY",
        "count": len(lat),
        "p50": bl.percentile(lat, 50),
        "p95": bl.percentile(lat, 95),
        "p99": bl.percentile(lat, 99),
        "max": max(lat) if lat else float("nan"),
        "call_p50": bl.percentile(lat, 50),
        "success": len(lat),
    }


def floor_claimer(args: argparse.Namespace) -> None:
    """The floor's claiming process: LISTEN, and on each NOTIFY run dbqueue's claim
    statement on the same connection; print "ready", then the claim times by id."""
    from norc.plugins.dbqueue import CHANNEL, DBQueue

    app = norc.Norc(args.url)
    queue = app.queue("default")
    assert isinstance(queue, DBQueue)
    claimant = Claimant(executor_id=1, host="bench", pid=os.getpid())
    conn = _raw_connect("postgresql", args.url)
    conn.execute(f"LISTEN {CHANNEL}")
    print("ready", flush=True)
    claimed: dict[int, float] = {}
    deadline = time.monotonic() + 120
    while len(claimed) < args.count and time.monotonic() < deadline:
        for _ in conn.notifies(timeout=0.25, stop_after=1):
            pass
        rows = conn.execute(*queue.claim_sql(claimant, 4, utcnow())).fetchall()
        at = time.time()
        claimed.update((int(r[0]), at) for r in rows if r[0] is not None)
    conn.close()
    app.close()
    print(json.dumps(claimed), flush=True)


def latency_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for backend in args.backends:
        for processes in (0, 1):
            bl.progress(f"latency {backend} {mode_name(processes)}")
            results.append(
                run_latency(
                    backend,
                    args.workdir,
                    processes=processes,
                    rate=args.latency_rate,
                    seconds=args.latency_seconds,
                )
            )
        if backend == "postgresql":
            bl.progress("latency postgresql bare SQL")
            results.append(
                run_latency_floor(
                    args.workdir, rate=args.latency_rate, seconds=args.latency_seconds
                )
            )
    bl.print_table(
        f"Enqueue→start latency into idle executors ({args.latency_rate:g}/s, one enqueue"
        f" per call, {args.latency_seconds:g} s; ms)",
        [
            "backend",
            "executor",
            "wake-up",
            "samples",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "call p50",
        ],
        [
            [
                r["backend"],
                r["mode"],
                r["wakeup"],
                r["count"],
                r["p50"],
                r["p95"],
                r["p99"],
                r["max"],
                r["call_p50"],
            ]
            for r in results
        ],
        [
            "started_at - enqueued_at from the rows (enqueued_at is stamped before the"
            " enqueue's instance insert, so its commit is included); call p50: started_at"
            " - the time enqueue() was called (the whole call, the task's read included).",
            "bare SQL: dbqueue's enqueue and claim statements from bare psycopg in two"
            " processes, from before the enqueue to the claim's rows: the floor of Norc's"
            " own SQL here (Norc's rows add the hand-off from the claim to a worker lane).",
            "data_version: SQLite across processes, a look at PRAGMA data_version (another"
            " connection's commit) every millisecond while such commits bring work; polling:"
            " claims from 2 ms apart, backing off to 50 ms while the queue stays empty.",
        ],
    )
    return results


# -- raw database limits ---------------------------------------------------------------

RAW_TABLE = "bench_raw_claims"


def _raw_connect(backend: str, url: str) -> Any:
    if backend == "postgresql":
        import psycopg

        u = sa.engine.make_url(url).set(drivername="postgresql")
        return psycopg.connect(u.render_as_string(hide_password=False), autocommit=True)
    if backend == "mariadb":
        import pymysql

        u = sa.engine.make_url(url)
        conn = pymysql.connect(
            host=u.host,
            port=u.port or 3306,
            user=u.username,
            password=u.password or "",
            database=u.database,
            autocommit=False,
        )
        with conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        return conn
    import sqlite3

    conn = sqlite3.connect(sa.engine.make_url(url).database, isolation_level=None, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def raw_prepare(backend: str, url: str, rows: int) -> None:
    """(Re)create the bare claim table with ``rows`` unclaimed rows."""
    conn = _raw_connect(backend, url)
    try:
        if backend == "postgresql":
            conn.execute(f"DROP TABLE IF EXISTS {RAW_TABLE}")
            conn.execute(
                f"CREATE TABLE {RAW_TABLE} (id BIGSERIAL PRIMARY KEY, claimed_by INT,"
                " claimed_at TIMESTAMP, done_at TIMESTAMP, payload VARCHAR(50))"
            )
            conn.execute(
                f"INSERT INTO {RAW_TABLE} (payload) SELECT 'x' FROM generate_series(1, %s)",
                (rows,),
            )
            conn.execute(f"CREATE INDEX ix_{RAW_TABLE} ON {RAW_TABLE} (claimed_by, id)")
            conn.execute(f"VACUUM ANALYZE {RAW_TABLE}")
        elif backend == "mariadb":
            with conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {RAW_TABLE}")
                cur.execute(
                    f"CREATE TABLE {RAW_TABLE} (id BIGINT AUTO_INCREMENT PRIMARY KEY,"
                    " claimed_by INT NULL, claimed_at DATETIME(6) NULL, done_at DATETIME(6)"
                    f" NULL, payload VARCHAR(50), INDEX ix_{RAW_TABLE} (claimed_by, id))"
                    " ENGINE=InnoDB"
                )
                cur.execute(f"INSERT INTO {RAW_TABLE} (payload) SELECT 'x' FROM seq_1_to_{rows}")
                cur.execute(f"ANALYZE TABLE {RAW_TABLE}")
            conn.commit()
        else:
            conn.execute(f"DROP TABLE IF EXISTS {RAW_TABLE}")
            conn.execute(
                f"CREATE TABLE {RAW_TABLE} (id INTEGER PRIMARY KEY, claimed_by INT,"
                " claimed_at TEXT, done_at TEXT, payload TEXT)"
            )
            conn.execute(
                f"WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < ?)"
                f" INSERT INTO {RAW_TABLE} (payload) SELECT 'x' FROM c",
                (rows,),
            )
            conn.execute(f"CREATE INDEX ix_{RAW_TABLE} ON {RAW_TABLE} (claimed_by, id)")
            conn.execute("ANALYZE")
    finally:
        conn.close()


def raw_consumer(args: argparse.Namespace) -> None:
    """One bare claimer: claims ``batch`` rows per transaction until time or rows run out."""
    backend, batch, me = args.backend, args.batch, os.getpid()
    conn = _raw_connect(backend, args.url)
    finish = args.mode == "claim+finish"
    if backend == "postgresql":
        claim_sql = (
            f"UPDATE {RAW_TABLE} SET claimed_by = %s, claimed_at = now() WHERE id IN"
            f" (SELECT id FROM {RAW_TABLE} WHERE claimed_by IS NULL ORDER BY id LIMIT %s"
            " FOR UPDATE SKIP LOCKED) RETURNING id"
        )

        def claim() -> list[int]:
            return [r[0] for r in conn.execute(claim_sql, (me, batch)).fetchall()]

        def done(ids: list[int]) -> None:
            conn.execute(f"UPDATE {RAW_TABLE} SET done_at = now() WHERE id = ANY(%s)", (ids,))

    elif backend == "mariadb":
        cur = conn.cursor()

        def claim() -> list[int]:
            cur.execute(
                f"SELECT id FROM {RAW_TABLE} WHERE claimed_by IS NULL ORDER BY id LIMIT %s"
                " FOR UPDATE SKIP LOCKED",
                (batch,),
            )
            ids = [r[0] for r in cur.fetchall()]
            if ids:
                cur.execute(
                    f"UPDATE {RAW_TABLE} SET claimed_by = %s, claimed_at = NOW(6)"
                    f" WHERE id IN ({','.join(['%s'] * len(ids))})",
                    (me, *ids),
                )
            conn.commit()
            return ids

        def done(ids: list[int]) -> None:
            cur.execute(
                f"UPDATE {RAW_TABLE} SET done_at = NOW(6)"
                f" WHERE id IN ({','.join(['%s'] * len(ids))})",
                ids,
            )
            conn.commit()

    else:
        claim_sql = (
            f"UPDATE {RAW_TABLE} SET claimed_by = ?, claimed_at = datetime('now') WHERE id IN"
            f" (SELECT id FROM {RAW_TABLE} WHERE claimed_by IS NULL ORDER BY id LIMIT ?)"
            " RETURNING id"
        )

        def claim() -> list[int]:
            conn.execute("BEGIN IMMEDIATE")
            ids = [r[0] for r in conn.execute(claim_sql, (me, batch)).fetchall()]
            conn.execute("COMMIT")
            return ids

        def done(ids: list[int]) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                f"UPDATE {RAW_TABLE} SET done_at = datetime('now')"
                f" WHERE id IN ({','.join('?' * len(ids))})",
                ids,
            )
            conn.execute("COMMIT")

    while time.time() < args.start_at:
        time.sleep(0.001)
    claimed = transactions = 0
    started = time.perf_counter()
    end = started + args.seconds
    while time.perf_counter() < end:
        ids = claim()
        transactions += 1
        if not ids:
            break
        if finish:
            done(ids)
            transactions += 1
        claimed += len(ids)
    elapsed = time.perf_counter() - started
    conn.close()
    print(f"{claimed} {transactions} {elapsed}", flush=True)


def run_raw(
    backend: str, workdir: Path, *, batch: int, mode: str, seconds: float, consumers: int = 2
) -> dict[str, Any]:
    url = f"sqlite:///{workdir / 'raw.db'}" if backend == "sqlite" else bl.server_url(backend)
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{workdir / 'raw.db'}{suffix}").unlink(missing_ok=True)
    # Enough rows that the consumers run for the whole time at the fastest rates seen.
    rows = 60_000 if batch == 1 else 600_000
    if seconds < 2:
        rows //= 3
    raw_prepare(backend, url, rows)
    bl.wait_for_quiet(QUIET_WAIT)
    start_at = time.time() + 1.0
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "raw-consumer",
                "--backend",
                backend,
                "--url",
                url,
                "--batch",
                str(batch),
                "--mode",
                mode,
                "--seconds",
                str(seconds),
                "--start-at",
                repr(start_at),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=bl.neutral_cwd(),
        )
        for _ in range(consumers)
    ]
    claimed = transactions = 0
    elapsed = 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        c, t, e = out.split()
        claimed, transactions, elapsed = (
            claimed + int(c),
            transactions + int(t),
            max(elapsed, float(e)),
        )
    return {
        "backend": backend,
        "batch": batch,
        "mode": mode,
        "claimed": claimed,
        "rate": claimed / elapsed,
        "tx_rate": transactions / elapsed,
        "exhausted": claimed >= rows,
    }


def raw_section(args: argparse.Namespace, throughput: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    for backend in args.backends:
        for batch, mode in args.raw_loops:
            bl.progress(f"raw {backend} batch={batch} {mode}")
            results.append(
                run_raw(backend, args.workdir, batch=batch, mode=mode, seconds=args.raw_seconds)
            )
    bl.print_table(
        "Raw database limits: a bare claim loop, 2 consumer processes, one connection each",
        ["backend", "per claim", "loop", "items/s", "transactions/s", "rows ran out"],
        [
            [r["backend"], r["batch"], r["mode"], r["rate"], r["tx_rate"], r["exhausted"]]
            for r in results
        ],
        [
            "PostgreSQL: one UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING"
            " (autocommit); MariaDB: SELECT ... FOR UPDATE SKIP LOCKED, UPDATE, COMMIT;",
            "SQLite: BEGIN IMMEDIATE, UPDATE ... RETURNING, COMMIT (WAL, synchronous=NORMAL)."
            " claim+finish adds a second transaction marking the batch done.",
        ],
    )
    # Norc as a fraction of the raw limits (every no-op Norc run of this invocation).
    loops = [(b, m) for b, m in args.raw_loops]
    rows = []
    for backend in args.backends:
        raw = {(r["batch"], r["mode"]): r["rate"] for r in results if r["backend"] == backend}
        for r in throughput:
            if r["backend"] != backend or r["task"] != NOOP:
                continue
            rows.append(
                [backend, r["mode"], r["isolation"], r["rate"]]
                + [f"{100 * r['rate'] / raw[loop]:.1f}%" for loop in loops]
            )
    if rows:
        bl.print_table(
            "Norc (no-op, full bookkeeping) as a fraction of the raw limits",
            ["backend", "executors", "isolation", "Norc/s"] + [f"of raw {b} {m}" for b, m in loops],
            rows,
        )
    return results


# -- isolation cost --------------------------------------------------------------------


class _StandIn:
    """What a slot thread or the worker loop reads from its executor, without a database:
    one instance at a time goes through a real Dispatch and comes back through _record."""

    python = None
    _kill = False

    def __init__(self, process: bool) -> None:
        from norc.executor.dispatch import Dispatch
        from norc.executor.executor import _Slot
        from norc.executor.workerloop import WorkerLoop

        self.runner: Any = WorkerLoop(self, 1) if process else _Slot(self, 0)  # type: ignore[arg-type]
        wake = self.runner.wake if process else None
        self._dispatch: Any = Dispatch(1, ahead_seconds=0.0, max_wait=60.0, on_work=wake)
        self.outcome: dict[str, Any] = {}
        self.done = threading.Event()
        self._taking = threading.Event()  # one instance at a time: nothing is sent ahead
        self.stats: dict[str, int] = {}

    def suspend(self, reason: str) -> None:
        raise RuntimeError(f"suspended: {reason}")

    def _record(self, work: Any, outcome: dict[str, Any]) -> None:
        self._dispatch.finished()
        self.outcome = outcome
        self.done.set()


def isolation_micro(workdir: Path, count: int) -> list[dict[str, Any]]:
    """The run path, no database: a slot thread vs the worker loop with one worker process."""
    from norc.executor.work import Work
    from norc_command import CommandTask

    results = []
    for label, cls, params, m in (
        ("no-op", NoopTask, {}, count),
        ("CommandTask true", CommandTask, {"command": "true", "nice": 0}, max(50, count // 4)),
    ):
        for isolation in ("thread", "process"):
            log_dir = bl.fresh_dir(workdir / "logs-iso")
            stand_in = _StandIn(process=isolation == "process")
            task = SimpleNamespace(id=1, timeout=None, finally_timeout=10.0)
            template = {
                "task_id": 1,
                "task_name": "iso",
                "task_type": cls.type_name,
                "type_path": f"{cls.__module__}:{cls.__qualname__}",
                "params": params,
                "settings": {"description": "", "timeout": None, "finally_timeout": 10.0},
                "timeout": None,
            }

            def run_one(
                i: int,
                log_dir: Path = log_dir,
                task: Any = task,
                template: dict[str, Any] = template,
                cls: Any = cls,
                stand_in: _StandIn = stand_in,
            ) -> dict[str, Any]:
                path = str(log_dir / f"tasks/iso/iso-{i}")
                job = {
                    "op": "run",
                    "instance_id": i,
                    "attempt": 1,
                    "log_path": path,
                    "fire_time": None,
                }
                work = Work(
                    SimpleNamespace(id=i),  # type: ignore[arg-type]
                    task,  # type: ignore[arg-type]
                    job,
                    template,
                    1,
                    f"tasks/iso/iso-{i}",
                    path,
                    cls,
                    None,
                    time.monotonic(),
                )
                stand_in.done.clear()
                stand_in._dispatch.put([work])
                stand_in.done.wait()
                return stand_in.outcome

            stand_in.runner.thread.start()
            for i in range(20):  # warm: the worker process, imports, first log folder
                run_one(i)
            times = []
            for i in range(20, 20 + m):
                t0 = time.perf_counter()
                outcome = run_one(i)
                times.append(time.perf_counter() - t0)
                assert outcome["status"] == "SUCCESS", outcome
            stand_in._dispatch.close()
            stand_in.runner.thread.join()
            results.append(
                {
                    "task": label,
                    "isolation": isolation,
                    "count": m,
                    "mean_us": 1e6 * sum(times) / m,
                    "p50_us": 1e6 * bl.percentile(times, 50),
                    "p99_us": 1e6 * bl.percentile(times, 99),
                }
            )
    return results


def isolation_section(args: argparse.Namespace) -> dict[str, Any]:
    bl.progress("isolation: slot run path")
    micro = isolation_micro(args.workdir, args.iso_n)
    end_to_end = []
    for isolation in ("thread", "process"):
        bl.progress(f"isolation: end to end sqlite embedded concurrency 1 {isolation}")
        r = run_throughput(
            "sqlite",
            args.workdir,
            processes=0,
            isolation=isolation,
            task=NOOP,
            n=args.iso_n,
            concurrency=1,
        )
        end_to_end.append(r)
    rows = []
    by = {(r["task"], r["isolation"]): r for r in micro}
    for label in ("no-op", "CommandTask true"):
        th, pr = by[(label, "thread")], by[(label, "process")]
        rows.append(
            [
                f"{label}: slot run path",
                th["mean_us"],
                pr["mean_us"],
                pr["mean_us"] - th["mean_us"],
                th["p99_us"],
                pr["p99_us"],
            ]
        )
    th, pr = end_to_end
    rows.append(
        [
            "no-op: end to end (sqlite, concurrency 1)",
            1e6 * th["window_s"] / th["n"],
            1e6 * pr["window_s"] / pr["n"],
            1e6 * (pr["window_s"] / pr["n"] - th["window_s"] / th["n"]),
            None,
            None,
        ]
    )
    bl.print_table(
        "Per-instance isolation cost: reusable worker process vs thread (µs per instance)",
        ["path", "thread", "process", "cost", "thread p99", "process p99"],
        rows,
        [
            "slot run path: prepared work handed through a Dispatch to a slot thread (thread)"
            " or to the worker loop with one worker process (process), its outcome handed"
            f" back; no database; {args.iso_n:,} no-ops, one at a time.",
            "end to end: embedded executor, concurrency 1: window / N, claim and recording"
            " included.",
        ],
    )
    return {"micro": micro, "end_to_end": end_to_end}


# -- batching: fixed vs per-item cost ---------------------------------------------------


def batch_costs(app: norc.Norc, sizes: tuple[int, ...], reps: int) -> dict[str, dict[int, float]]:
    """Median ms of the executor's database steps for batches of each size."""

    queue = app.queue("default")
    claimant = Claimant(executor_id=424243, host="bench", pid=os.getpid())
    executor = app.executor(concurrency=1, isolation="thread")  # never started: _prepare only
    out: dict[str, dict[int, float]] = {
        "claim": {},
        "claimed_work": {},
        "prepare": {},
        "record": {},
    }
    for k in sizes:
        app.enqueue_many(NOOP, k * (reps + 3))
        claim, read, prep, record = [], [], [], []
        for rep in range(reps + 3):
            t0 = time.perf_counter()
            ids = queue.claim(claimant, k, timeout=0)
            t1 = time.perf_counter()
            work = app.db.claimed_work(ids)
            t2 = time.perf_counter()
            for instance, task in work:
                executor._prepare(instance, task)
            t3 = time.perf_counter()
            rows = [_finish_row(i, claimant.executor_id) for i in ids]
            t4 = time.perf_counter()
            with app.db.transaction() as tx:
                app.db.finish_instances(tx, rows)
                queue.release(ids, tx)
            t5 = time.perf_counter()
            assert len(ids) == k, (len(ids), k)
            if rep >= 3:  # the first rounds warm the statement caches for this size
                claim.append(t1 - t0)
                read.append(t2 - t1)
                prep.append(t3 - t2)
                record.append(t5 - t4)
        for name, values in (
            ("claim", claim),
            ("claimed_work", read),
            ("prepare", prep),
            ("record", record),
        ):
            out[name][k] = 1000 * bl.median(values)
    return out


def batching_section(args: argparse.Namespace) -> dict[str, Any]:
    sizes = (1, 8, 64)
    costs = []
    for backend in args.backends:
        bl.progress(f"batching {backend}: step costs")
        url = bl.fresh_database(backend, args.workdir, f"batch-{backend}")
        log_dir = bl.fresh_dir(args.workdir / f"logs-batch-{backend}")
        app = make_app(url, log_dir)
        try:
            costs.append((backend, batch_costs(app, sizes, args.batch_reps)))
        finally:
            app.close()
    rows = []
    for backend, c in costs:
        for step, by_k in c.items():
            per_item = (by_k[64] - by_k[1]) / 63
            rows.append(
                [
                    backend,
                    step,
                    by_k[1],
                    by_k[8],
                    by_k[64],
                    max(0.0, by_k[1] - per_item),
                    1000 * per_item,
                    1000 * by_k[8] / 8,
                    1000 * by_k[64] / 64,
                ]
            )
    bl.print_table(
        "Executor steps: cost per batch (ms, one thread, idle machine) and per instance",
        [
            "backend",
            "step",
            "batch 1",
            "batch 8",
            "batch 64",
            "fixed ms",
            "µs/item",
            "µs/inst @8",
            "µs/inst @64",
        ],
        rows,
        [
            "claim: DBQueue.claim (one transaction); claimed_work: the read of the claimed"
            " rows and tasks; prepare: Executor._prepare (job dicts, log paths);",
            "record: the recorder's transaction (finish_instances + release). fixed = batch 1"
            " minus one item; µs/item = (batch 64 - batch 1) / 63.",
        ],
    )
    sweep = []
    for backend in args.backends:
        for concurrency in args.sweep:
            bl.progress(f"batching {backend}: 2 proc, concurrency {concurrency}")
            sweep.append(
                run_throughput(
                    backend,
                    args.workdir,
                    processes=2,
                    isolation="process",
                    task=NOOP,
                    n=args.n // 4,
                    concurrency=concurrency,
                )
            )
    if not sweep:
        return {"costs": dict(costs), "sweep": sweep}
    bl.print_table(
        f"Bigger claims: 2 executor processes, process isolation, N={args.n // 4:,}",
        [
            "backend",
            "concurrency",
            "processed/s",
            "per claim",
            "per write",
            "CPU busy",
            "norc µs/inst",
            "of which workers",
            "db µs/inst",
            "verified",
        ],
        [
            [
                r["backend"],
                r["concurrency"],
                r["rate"],
                r["n"] / r["claims"] if r["claims"] else float("nan"),
                r["n"] / r["writes"],
                f"{100 * r['cpu_util']:.0f}%",
                r["norc_cpu_us"],
                r["worker_cpu_us"],
                r["db_cpu_us"],
                r["verified"],
            ]
            for r in sweep
        ],
        [
            "More slots: more idle slots per claim and more outcomes per write, on top of the"
            " claim-ahead.",
        ],
    )
    return {"costs": dict(costs), "sweep": sweep}


# -- growth: history -------------------------------------------------------------------


def add_history(app: norc.Norc, backend: str, count: int, task_id: int) -> None:
    """Insert ``count`` finished (SUCCESS) instances in bulk, with SQL."""
    if count <= 0:
        return
    cols = (
        "task_id, queue, priority, status, attempt, created_at, enqueued_at, started_at,"
        " ended_at, executor_id, host, pid, exit_code, log_key"
    )
    if backend == "postgresql":
        ts = "TIMESTAMP '2024-01-01' + g * INTERVAL '1 millisecond'"
        sql = (
            f"INSERT INTO norc_instances ({cols}) SELECT :task, 'default', 0, 'SUCCESS', 1,"
            f" {ts}, {ts}, {ts}, {ts}, 1, 'bench', 1, 0, 'tasks/x/history-' || g"
            " FROM generate_series(1, :n) g"
        )
    elif backend == "mariadb":
        ts = "TIMESTAMP('2024-01-01') + INTERVAL seq * 1000 MICROSECOND"
        sql = (
            f"INSERT INTO norc_instances ({cols}) SELECT :task, 'default', 0, 'SUCCESS', 1,"
            f" {ts}, {ts}, {ts}, {ts}, 1, 'bench', 1, 0, CONCAT('tasks/x/history-', seq)"
            f" FROM seq_1_to_{count}"
        )
    else:
        ts = "strftime('%Y-%m-%d %H:%M:%f', '2024-01-01', '+' || (g / 1000.0) || ' seconds')"
        sql = (
            "WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < :n)"
            f" INSERT INTO norc_instances ({cols}) SELECT :task, 'default', 0, 'SUCCESS', 1,"
            f" {ts} || '000', {ts} || '000', {ts} || '000', {ts} || '000', 1, 'bench', 1, 0,"
            " 'tasks/x/history-' || g FROM c"
        )
    with app.db.transaction() as tx:
        tx.conn.execute(sa.text(sql), {"task": task_id, "n": count})
    with app.db.engine.connect() as conn:
        if backend == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(sa.text("VACUUM ANALYZE norc_instances"))
        elif backend == "mariadb":
            conn.execute(sa.text("ANALYZE TABLE norc_instances"))
        else:
            conn.execute(sa.text("ANALYZE"))
            conn.commit()


def measure_ops(app: norc.Norc, samples: int) -> dict[str, float]:
    """Single-instance enqueue, claim and finish latencies (ms) on the current database."""

    queue = app.queue("default")
    claimant = Claimant(executor_id=424242, host="bench", pid=os.getpid())
    enq = []
    for _ in range(samples):
        t0 = time.perf_counter()
        app.enqueue(NOOP)
        enq.append(1000 * (time.perf_counter() - t0))
    claim, work, finish = [], [], []
    claimed: list[int] = []
    for _ in range(samples):
        t0 = time.perf_counter()
        ids = queue.claim(claimant, 1, timeout=0)
        t1 = time.perf_counter()
        app.db.claimed_work(ids)
        t2 = time.perf_counter()
        claim.append(1000 * (t1 - t0))
        work.append(1000 * (t2 - t1))
        claimed += ids
    for instance_id in claimed:
        row = _finish_row(instance_id, claimant.executor_id)
        t0 = time.perf_counter()
        with app.db.transaction() as tx:
            app.db.finish_instances(tx, [row])
            queue.release([instance_id], tx)
        finish.append(1000 * (time.perf_counter() - t0))
    assert len(claimed) == samples, (len(claimed), samples)
    return {
        "enqueue_p50": bl.median(enq),
        "claim_p50": bl.median(claim),
        "claim_p95": bl.percentile(claim, 95),
        "claimed_work_p50": bl.median(work),
        "finish_p50": bl.median(finish),
        "finish_p95": bl.percentile(finish, 95),
    }


def history_section(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    plans: list[tuple[str, str, str]] = []
    backlog: list[dict[str, Any]] = []
    for backend in args.backends:
        url = bl.fresh_database(backend, args.workdir, f"hist-{backend}")
        log_dir = bl.fresh_dir(args.workdir / f"logs-hist-{backend}")
        app = make_app(url, log_dir)
        task_id = app.task_record(NOOP).id
        have = 0
        try:
            for size in args.history:
                bl.progress(f"history {backend}: {size:,} finished instances")
                t0 = time.perf_counter()
                add_history(app, backend, size - have, task_id)
                fill_s = time.perf_counter() - t0
                have = size
                measure_ops(app, 20)  # warm the statement caches
                ops = measure_ops(app, args.history_samples)
                results.append({"backend": backend, "history": size, "fill_s": fill_s, **ops})
            plans.extend((backend, *p) for p in explain_hot_path(app, backend))
            for size in args.backlog:
                bl.progress(f"history {backend}: claims with a backlog of {size:,}")
                backlog.append(backlog_claims(app, backend, size))
        finally:
            app.close()
    rows = []
    for r in results:
        base = next(
            x for x in results if x["backend"] == r["backend"] and x["history"] == args.history[0]
        )
        rows.append(
            [
                r["backend"],
                r["history"],
                r["claim_p50"],
                r["claim_p95"],
                f"{100 * (r['claim_p50'] / base['claim_p50'] - 1):+.0f}%",
                r["claimed_work_p50"],
                r["finish_p50"],
                r["enqueue_p50"],
                r["fill_s"],
            ]
        )
    bl.print_table(
        "Cost vs history: single-instance latencies (ms) with finished instances in the table",
        [
            "backend",
            "finished rows",
            "claim p50",
            "claim p95",
            "claim vs 0",
            "claimed_work p50",
            "finish p50",
            "enqueue p50",
            "fill s",
        ],
        rows,
        [
            "claim: DBQueue.claim(limit 1) = SKIP LOCKED select + claimed + mark_running, one"
            " transaction; claimed_work: the executor's read of the claimed rows;",
            "finish: finish_instances + release for one instance (the recorder's transaction);"
            f" {args.history_samples} samples each.",
        ],
    )
    bl.print_table(
        "Claim latency with instances waiting (ms, p50 of 100 claims of 1)",
        ["backend", "waiting", "empty queue", "backlog, fresh stats", "backlog, after ANALYZE"],
        [[b["backend"], b["size"], b["empty"], b["fresh"], b["analyzed"]] for b in backlog],
        [
            "fresh stats: right after enqueue_many, before any ANALYZE (autovacuum has not run"
            " yet); empty queue: the history table's last claim p50.",
        ],
    )
    title = f"Query plans of the hot path with {args.history[-1]:,} finished instances"
    lines = [title, "=" * len(title)]
    for backend, statement, plan in plans:
        lines.append(f"{backend:10}  {statement}")
        lines.append(f"{'':10}    -> {plan}")
    lines.append(
        "EXPLAIN (PostgreSQL, MariaDB) / EXPLAIN QUERY PLAN (SQLite) of the statements one"
        " claim and one finish sent, captured from the driver (the table was ANALYZEd)."
    )
    print("\n".join(lines) + "\n", flush=True)
    return {"history": results, "backlog": backlog, "plans": plans}


def backlog_claims(app: norc.Norc, backend: str, size: int) -> dict[str, Any]:
    """Claim p50 with ``size`` instances waiting: before and after the planner's statistics
    have seen them."""
    queue = app.queue("default")
    claimant = Claimant(executor_id=424245, host="bench", pid=os.getpid())

    def p50() -> float:
        times = []
        for _ in range(100):
            t0 = time.perf_counter()
            got = queue.claim(claimant, 1, timeout=0)
            times.append(1000 * (time.perf_counter() - t0))
            assert got
        return bl.median(times)

    empty = measure_ops(app, 30)["claim_p50"]
    app.enqueue_many(NOOP, size)
    fresh = p50()
    with app.db.engine.connect() as conn:
        if backend == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(sa.text("ANALYZE norc_instances"))
            conn.execute(sa.text("ANALYZE norc_queue_items"))
        elif backend == "mariadb":
            conn.execute(sa.text("ANALYZE TABLE norc_instances, norc_queue_items"))
        else:
            conn.execute(sa.text("ANALYZE"))
            conn.commit()
    analyzed = p50()
    with app.db.transaction() as tx:  # the next measurement starts from an empty queue
        tx.conn.execute(sa.text("DELETE FROM norc_queue_items"))
        tx.conn.execute(
            sa.text("UPDATE norc_instances SET status = 'SKIPPED' WHERE status = 'QUEUED'")
        )
    return {
        "backend": backend,
        "size": size,
        "empty": empty,
        "fresh": fresh,
        "analyzed": analyzed,
    }


def explain_hot_path(app: norc.Norc, backend: str) -> list[tuple[str, str]]:
    """(statement, plan) for the statements a claim and a finish send to the database."""
    from sqlalchemy import event

    captured: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        captured.append((statement, params[0] if many and params else params))

    queue = app.queue("default")
    claimant = Claimant(executor_id=424244, host="bench", pid=os.getpid())
    app.enqueue(NOOP)
    event.listen(app.db.engine, "before_cursor_execute", grab)
    try:
        ids = queue.claim(claimant, 1, timeout=0)
        with app.db.transaction() as tx:
            app.db.finish_instances(
                tx,
                [_finish_row(i, claimant.executor_id) for i in ids],
            )
            queue.release(ids, tx)
    finally:
        event.remove(app.db.engine, "before_cursor_execute", grab)
    if backend == "postgresql":
        # The PostgreSQL claim runs on psycopg's own connection, which the event above
        # does not see: explain the statement it sends, as the queue builds it.
        from norc.plugins.dbqueue import DBQueue

        assert isinstance(queue, DBQueue)
        captured.insert(0, queue.claim_sql(claimant, 1, utcnow()))
    out = []
    prefix = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN "
    for statement, params in captured:
        head = statement.lstrip().split(None, 1)[0].upper()
        if head not in ("SELECT", "UPDATE", "DELETE", "WITH") or "norc_" not in statement:
            continue
        with app.db.reading() as conn:
            rows = conn.exec_driver_sql(prefix + statement, params).all()
        if backend == "postgresql":
            plan = " / ".join(str(r[0]).strip().split("  (cost")[0] for r in rows)
        elif backend == "mariadb":
            keys = rows[0]._mapping.keys()
            plan = " / ".join(
                ", ".join(
                    f"{k}={r._mapping[k]}"
                    for k in ("table", "type", "key", "rows", "Extra")
                    if k in keys and r._mapping[k] is not None
                )
                for r in rows
            )
        else:
            plan = " / ".join(str(r[-1]) for r in rows)
        short = " ".join(statement.split())
        out.append((short[:70] + ("..." if len(short) > 70 else ""), plan))
    return out


# -- growth: queues --------------------------------------------------------------------


def claim_probe(app: norc.Norc, count: int = 50) -> float:
    """Claim p50 (ms, one instance per claim) on a fresh queue while every other queue's
    items wait in the same table."""
    app.create_queue("probe")
    app.enqueue_many(NOOP, count, queue="probe")
    queue = app.queue("probe")
    claimant = Claimant(executor_id=424246, host="bench", pid=os.getpid())
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        assert queue.claim(claimant, 1, timeout=0)
        times.append(1000 * (time.perf_counter() - t0))
    return bl.median(times[5:])


def queues_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for backend in args.backends:
        for count in args.queues:
            bl.progress(f"queues {backend}: {count}")
            url = bl.fresh_database(backend, args.workdir, f"q-{backend}")
            log_dir = bl.fresh_dir(args.workdir / f"logs-q-{backend}")
            app = make_app(url, log_dir)
            try:
                names = ["default"] + [f"q{i}" for i in range(1, count)]
                for name in names[1:]:
                    app.create_queue(name)
                per = max(1, args.n // 5 // count)
                t0 = time.perf_counter()
                batches = {name: app.enqueue_many(NOOP, per, queue=name) for name in names}
                enqueue_s = time.perf_counter() - t0
                probe = claim_probe(app)
                windows = 0.0
                started = time.perf_counter()
                success = 0
                for name in names:
                    with app.executor(queue=name, concurrency=args.concurrency, isolation="thread"):
                        wait_final(app, batches[name], 120)
                    rows = instance_rows(app, batches[name])
                    success += sum(1 for r in rows if r.status == "SUCCESS")
                    windows += secs(min(r.started_at for r in rows), max(r.ended_at for r in rows))
                wall = time.perf_counter() - started
            finally:
                app.close()
            total = per * count
            results.append(
                {
                    "backend": backend,
                    "queues": count,
                    "n": total,
                    "enqueue_rate": total / enqueue_s,
                    "rate": total / windows,
                    "wall_rate": total / wall,
                    "verified": success == total,
                    "probe_p50": probe,
                }
            )
    bl.print_table(
        "Cost vs number of queues: N no-ops spread evenly, each queue drained by its own"
        " embedded executor in turn",
        [
            "backend",
            "queues",
            "N",
            "enqueue/s",
            "per queue",
            "claim p50 ms",
            "processed/s",
            "incl. executor start/stop",
            "verified",
        ],
        [
            [
                r["backend"],
                r["queues"],
                r["n"],
                r["enqueue_rate"],
                r["n"] // r["queues"],
                r["probe_p50"],
                r["rate"],
                r["wall_rate"],
                r["verified"],
            ]
            for r in results
        ],
        [
            f"concurrency {args.concurrency}, isolation thread; processed/s = N / sum of the"
            " per-queue windows (first start to last end); all other queues' items wait in"
            " the same table meanwhile.",
            "claim p50: one more queue, 50 claims of one instance while all the other queues'"
            " items wait (the claim's own cost, whatever the number of queues).",
        ],
    )
    return results


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: small sizes, under 2 min")
    p.add_argument("--n", type=int, help="no-op instances per throughput run (10,000)")
    p.add_argument(
        "--backends", default="sqlite,postgresql,mariadb", help="comma list (default: all three)"
    )
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    p.add_argument(
        "--executors", help="comma list of executor process counts; 0 = embedded (0,1,2,4)"
    )
    p.add_argument("--isolations", help="comma list (process,thread; quick: process)")
    p.add_argument("--concurrency", type=int, default=8, help="slots per executor (8)")
    p.add_argument("--latency-rate", type=float, default=100.0)
    p.add_argument("--latency-seconds", type=float)
    p.add_argument("--raw-seconds", type=float)
    p.add_argument("--iso-n", type=int)
    p.add_argument("--batch-reps", type=int, help="repetitions per batch size (30)")
    p.add_argument("--sweep", help="concurrency values for the bigger-claims runs (32,64)")
    p.add_argument("--history", help="comma list of finished-instance counts (0,100000,1000000)")
    p.add_argument("--history-samples", type=int)
    p.add_argument("--backlog", help="comma list of queued backlogs for claims (10000,100000)")
    p.add_argument("--queues", help="comma list of queue counts (1,10,100)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "norc-bench")
    p.add_argument("--json", help="also write every result to this JSON file")
    p.add_argument(
        "--quiet-wait",
        type=float,
        help="before each run wait up to this many s for an idle machine (10; quick 0)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    global QUIET_WAIT
    QUIET_WAIT = args.quiet_wait if args.quiet_wait is not None else (0.0 if quick else 10.0)
    args.n = args.n or (1000 if quick else 10_000)
    args.backends = [b for b in args.backends.split(",") if b]
    for b in args.backends:
        if b not in bl.ALL_BACKENDS:
            p.error(f"unknown backend {b!r}")
    args.sections = [s for s in args.sections.split(",") if s]
    for s in args.sections:
        if s not in SECTIONS:
            p.error(f"unknown section {s!r}")
    args.executors = [
        int(x) for x in (args.executors or ("0,2" if quick else "0,1,2,4")).split(",")
    ]
    args.isolations = [
        i for i in (args.isolations or ("process" if quick else "process,thread")).split(",") if i
    ]
    # Process isolation with every executor count; thread isolation (the comparison) with
    # embedded and 2 processes; CommandTask: embedded and 2 processes, process isolation,
    # and embedded in threads.
    args.noop_runs = [("process", e) for e in args.executors] + [
        ("thread", e) for e in args.executors if e in (0, 2)
    ]
    args.command_runs = (
        [("process", 0)]
        if quick
        else [("process", e) for e in args.executors if e in (0, 2)] + [("thread", 0)]
    )
    args.raw_loops = (
        [(1, "claim"), (50, "claim")]
        if quick
        else [(1, "claim"), (50, "claim"), (1, "claim+finish"), (50, "claim+finish")]
    )
    args.latency_seconds = args.latency_seconds or (1.0 if quick else 5.0)
    args.raw_seconds = args.raw_seconds or (1.0 if quick else 3.0)
    args.iso_n = args.iso_n or (300 if quick else 2000)
    args.history = [
        int(x) for x in (args.history or ("0,10000" if quick else "0,100000,1000000")).split(",")
    ]
    args.batch_reps = args.batch_reps or (5 if quick else 30)
    args.sweep = [int(x) for x in (args.sweep or ("" if quick else "32,64")).split(",") if x]
    args.backlog = [
        int(x) for x in (args.backlog or ("2000" if quick else "10000,100000")).split(",") if x
    ]
    args.history_samples = args.history_samples or (50 if quick else 300)
    args.queues = [int(x) for x in (args.queues or ("1,10" if quick else "1,10,100")).split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    return args


def main(argv: list[str]) -> None:
    if argv[:1] == ["executor-child"]:
        p = argparse.ArgumentParser()
        for name in ("--url", "--log-dir", "--queue", "--isolation"):
            p.add_argument(name, required=True)
        p.add_argument("--concurrency", type=int, required=True)
        executor_child(p.parse_args(argv[1:]))
        return
    if argv[:1] == ["floor-claimer"]:
        p = argparse.ArgumentParser()
        p.add_argument("--url", required=True)
        p.add_argument("--count", type=int, required=True)
        floor_claimer(p.parse_args(argv[1:]))
        return
    if argv[:1] == ["raw-consumer"]:
        p = argparse.ArgumentParser()
        for name in ("--backend", "--url", "--mode"):
            p.add_argument(name, required=True)
        p.add_argument("--batch", type=int, required=True)
        p.add_argument("--seconds", type=float, required=True)
        p.add_argument("--start-at", type=float, required=True)
        raw_consumer(p.parse_args(argv[1:]))
        return
    args = parse_args(argv)
    if args.json:
        args.json = str(Path(args.json).resolve())
    args.workdir = args.workdir.resolve()
    os.chdir(bl.neutral_cwd())  # embedded executors' workers inherit it (see neutral_cwd)
    started = time.perf_counter()
    info = bl.machine_info(args.backends)
    bl.print_machine(info)
    print(f"command: python bench/queue.py {' '.join(argv)}\n", flush=True)
    out: dict[str, Any] = {"machine": info, "argv": argv}
    throughput: list[dict[str, Any]] = []
    if "throughput" in args.sections:
        throughput = throughput_section(args, NOOP, args.n, args.noop_runs)
        out["throughput"] = throughput
        enq = [
            single_enqueue_rate(b, args.workdir, 300 if args.quick else 1000) for b in args.backends
        ]
        bl.print_table(
            "Enqueue rate",
            ["backend", "enqueue_many(N)/s", "enqueue_many(100)/s", "enqueue()/s", "enqueue() ms"],
            [
                [
                    e["backend"],
                    bl.median(
                        [r["enqueue_rate"] for r in throughput if r["backend"] == e["backend"]]
                    ),
                    e["batch100_rate"],
                    e["single_rate"],
                    e["single_ms"],
                ]
                for e in enq
            ],
            [f"enqueue_many(N): median over the throughput runs (N={args.n:,}, one transaction)."],
        )
        out["enqueue"] = enq
    if "command" in args.sections:
        out["command"] = throughput_section(args, TRUE, max(100, args.n // 5), args.command_runs)
    if "latency" in args.sections:
        out["latency"] = latency_section(args)
    if "raw" in args.sections:
        out["raw"] = raw_section(args, throughput)
    if "isolation" in args.sections:
        out["isolation"] = isolation_section(args)
    if "batching" in args.sections:
        out["batching"] = batching_section(args)
    if "history" in args.sections:
        out["history"] = history_section(args)
    if "queues" in args.sections:
        out["queues"] = queues_section(args)
    out["seconds"] = time.perf_counter() - started
    print(f"total {out['seconds']:.0f} s", flush=True)
    bl.save_json(args.json, out)


if __name__ == "__main__":
    main(sys.argv[1:])
