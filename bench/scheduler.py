# ruff: noqa: E402  (sys.path is fixed before the imports, see below)
"""Scheduler benchmark: fire lateness, CPU, memory and start-up time against N schedules.

    python bench/scheduler.py              # 1k, 10k, 100k schedules; SQLite, PostgreSQL, MariaDB
    python bench/scheduler.py --quick      # 1k and 10k, SQLite and PostgreSQL, short runs
    python bench/scheduler.py --sizes 10000 --backends postgresql --workloads burst

Two workloads, both with every schedule due within the run:

- ``spread``: simple schedules, ``every=PERIOD`` seconds (10), their first fires spread
  evenly over one period, so N/PERIOD fires fall due every second at evenly spaced times.
- ``burst``: cron ``* * * * * *``: all N schedules fall due at the same instant, every
  second (skipped for N above ``--burst-max``, 10k by default).

The schedules are written in bulk (copies of one row made by ``add_schedule``). One
scheduler runs in a child process, which reports its start-up time (until
``len(scheduler.held) == N``), CPU seconds (getrusage) and memory (VmRSS / VmHWM), and
the moment each fire transaction committed. Lateness comes from the database:
``enqueued_at - fire_time`` of every instance fired after start-up (the scheduler
stamps ``enqueued_at`` when it starts the fire, before its transaction);
``committed`` is when that transaction had committed, i.e. when an executor could
first see the instance.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the standard library's `queue` (see bench/queue.py).
_here = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _here]
sys.path.append(_here)

import argparse
import json
import resource
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import benchlib as bl
import sqlalchemy as sa

import norc
from norc.store.schema import instances as t_instances
from norc.store.schema import schedules as t_schedules
from norc.testing import NoopTask

TASK = "bench-sched-noop"
#: Seconds to wait before each run for the (shared) machine to be idle: --quiet-wait.
QUIET_WAIT = 10.0


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- the scheduler process -------------------------------------------------------------


def scheduler_child(args: argparse.Namespace) -> None:
    """Run one scheduler; print one JSON line with its own measurements."""
    app = norc.Norc(args.url, log_dir=args.log_dir)
    app.db.ensure_schema()
    rss_base_kb = _status_kb("VmRSS")
    commits: list[tuple[float, list[float]]] = []  # (commit time, fire times) per transaction
    fire_seconds: list[float] = []
    count_seconds: list[float] = []
    sched = app.scheduler()

    original_fire = getattr(sched, "_fire", None)
    if original_fire is not None:

        def timed_fire(due: dict[int, tuple[datetime, int]], now: datetime) -> Any:
            t0 = time.perf_counter()
            result = original_fire(due, now)
            done = time.time()
            fire_seconds.append(time.perf_counter() - t0)
            commits.append((done, [fire_at.timestamp() for fire_at, _ in due.values()]))
            return result

        sched._fire = timed_fire  # type: ignore[method-assign]

    # The lease round's one read of the whole table: schedules per holder.
    store = app.db.schedules
    original_holders = store.holders

    def timed_holders(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        result = original_holders(*a, **k)
        count_seconds.append(time.perf_counter() - t0)
        return result

    store.holders = timed_holders  # type: ignore[method-assign]

    # The scheduler loop's other steps, each blocking the loop while it runs.
    steps: dict[str, list[float]] = {}
    for name in ("_lease_round", "_apply_changes"):
        original = getattr(sched, name, None)
        if original is None:
            continue
        steps[name] = []

        def timed(*a: Any, _original: Any = original, _name: str = name, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _original(*a, **k)
            finally:
                steps[_name].append(time.perf_counter() - t0)

        setattr(sched, name, timed)

    cpu0 = _cpu()
    t0 = time.time()
    sched.start()
    deadline = t0 + args.load_timeout
    while len(sched.held) < args.n and time.time() < deadline:
        time.sleep(0.02)
    loaded_at = time.time()
    held = len(sched.held)
    cpu_load = _cpu() - cpu0
    rss_loaded_kb = _status_kb("VmRSS")
    threading.Event().wait(max(args.seconds, args.until - time.time()))
    cpu_run = _cpu() - cpu0 - cpu_load
    run_s = time.time() - loaded_at
    rss_end_kb = _status_kb("VmRSS")
    sched.stop(timeout=120)
    cutoff = loaded_at + 0.5
    committed = [
        1000 * (done - fire_at) for done, fires in commits for fire_at in fires if fire_at >= cutoff
    ]
    print(
        json.dumps(
            {
                "t0": t0,
                "loaded_at": loaded_at,
                "load_s": loaded_at - t0,
                "held": held,
                "cpu_load_s": cpu_load,
                "cpu_run_s": cpu_run,
                "run_s": run_s,
                "rss_base_mb": rss_base_kb / 1024,
                "rss_loaded_mb": rss_loaded_kb / 1024,
                "rss_end_mb": rss_end_kb / 1024,
                "hwm_mb": _status_kb("VmHWM") / 1024,
                "fired": sched.fired,
                "fire_tx": len(fire_seconds),
                "fire_tx_p50_ms": 1000 * bl.median(fire_seconds),
                "fire_tx_max_ms": 1000 * max(fire_seconds, default=float("nan")),
                "count_count": len(count_seconds),
                "count_max_ms": 1000 * max(count_seconds, default=float("nan")),
                "count_p50_ms": 1000 * bl.median(count_seconds),
                **{
                    f"{name.strip('_')}_{stat}_ms": 1000 * fn(values) if values else float("nan")
                    for name, values in steps.items()
                    for stat, fn in (("p50", bl.median), ("max", max))
                },
                "committed_p50": bl.percentile(committed, 50),
                "committed_p99": bl.percentile(committed, 99),
                "committed_max": max(committed, default=float("nan")),
            }
        ),
        flush=True,
    )
    app.close()


# -- set-up and analysis ---------------------------------------------------------------


def create_schedules(app: norc.Norc, workload: str, n: int, period: float, start: datetime) -> None:
    """N schedules: one through add_schedule, the rest copies of its row, in bulk."""
    if workload == "burst":
        first = app.add_schedule(TASK, cron="* * * * * *")
    else:
        first = app.add_schedule(TASK, every=period, start=start)
    with app.db.reading() as conn:
        template = dict(
            conn.execute(sa.select(t_schedules).where(t_schedules.c.id == first.id))
            .mappings()
            .one()
        )
    template.pop("id")
    base = template.get("start_at")
    if workload == "burst":
        # The first burst falls due once the scheduler should hold every schedule (the
        # cron fires every second, so any whole second is a fire time).
        first_fire = start.replace(microsecond=0) + timedelta(seconds=1)
        template["next_fire_at"] = first_fire
        with app.db.transaction() as tx:
            tx.conn.execute(
                sa.update(t_schedules)
                .where(t_schedules.c.id == first.id)
                .values(next_fire_at=first_fire)
            )
    rows = []
    for i in range(1, n):
        row = dict(template)
        if workload == "spread":
            # Fires spread evenly over one period.
            at = base + timedelta(seconds=period * i / n)
            row["start_at"] = at
            row["next_fire_at"] = at
        rows.append(row)
    for chunk in range(0, len(rows), 10_000):
        with app.db.transaction() as tx:
            tx.conn.execute(sa.insert(t_schedules), rows[chunk : chunk + 10_000])


def run_one(
    backend: str, workdir: Path, workload: str, n: int, seconds: float, period: float
) -> dict[str, Any]:
    bl.wait_for_quiet(QUIET_WAIT)
    url = bl.fresh_database(backend, workdir, f"sched-{backend}")
    log_dir = bl.fresh_dir(workdir / f"logs-sched-{backend}")
    app = norc.Norc(url, log_dir=log_dir)
    app.save_task(NoopTask(name=TASK))
    # The first fires begin once the scheduler is expected to hold every schedule (a
    # generous guess: 4 s + 150 µs per schedule for writing and loading), so no fire is
    # overdue at start-up; a spread run then covers one whole period of fires, a burst
    # run ``seconds`` of bursts.
    start = datetime.now(UTC) + timedelta(seconds=4 + 150e-6 * n)
    t0 = time.perf_counter()
    create_schedules(app, workload, n, period, start)
    create_s = time.perf_counter() - t0
    until = start.timestamp() + (period + 1 if workload == "spread" else seconds)
    app.close()
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "scheduler-child",
            "--url",
            url,
            "--log-dir",
            str(log_dir),
            "--n",
            str(n),
            "--seconds",
            str(seconds),
            "--load-timeout",
            "120",
            "--until",
            repr(until),
        ],
        capture_output=True,
        text=True,
        cwd=bl.neutral_cwd(),
        timeout=seconds + 600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scheduler child failed:\n{proc.stderr[-3000:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    app = norc.Norc(url, log_dir=log_dir)
    cutoff = datetime.fromtimestamp(child["loaded_at"] + 0.5, UTC)
    c = t_instances.c
    with app.db.reading() as conn:
        rows = conn.execute(
            sa.select(c.status, c.fire_time, c.enqueued_at).where(
                c.schedule_id.is_not(None), c.fire_time >= cutoff
            )
        ).all()
    app.close()
    late = [1000 * (r.enqueued_at - r.fire_time).total_seconds() for r in rows if r.enqueued_at]
    fire_times = [r.fire_time.timestamp() for r in rows]
    span = max(fire_times) - min(fire_times) if len(fire_times) > 1 else 0.0
    skipped = sum(1 for r in rows if r.status == "SKIPPED")
    bl.fresh_dir(log_dir)
    return {
        "backend": backend,
        "workload": workload,
        "n": n,
        "create_s": create_s,
        "fires": len(late),
        "skipped": skipped,
        "late_p50": bl.percentile(late, 50),
        "late_p99": bl.percentile(late, 99),
        "late_max": max(late, default=float("nan")),
        "cpu_per_s": child["cpu_run_s"] / child["run_s"],
        # burst: one fire time per second, so the span misses the last second.
        "fires_per_s": len(rows) / (span + (1.0 if workload == "burst" else 0.0))
        if span > 0
        else float("nan"),
        **child,
    }


def main(argv: list[str]) -> None:
    if argv[:1] == ["scheduler-child"]:
        p = argparse.ArgumentParser()
        p.add_argument("--url", required=True)
        p.add_argument("--log-dir", required=True)
        p.add_argument("--n", type=int, required=True)
        p.add_argument("--seconds", type=float, required=True)
        p.add_argument("--load-timeout", type=float, required=True)
        p.add_argument("--until", type=float, default=0.0)
        scheduler_child(p.parse_args(argv[1:]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1k and 10k, SQLite and PostgreSQL")
    p.add_argument("--sizes", help="comma list of schedule counts (1000,10000,100000)")
    p.add_argument("--backends", help="comma list (sqlite,postgresql,mariadb)")
    p.add_argument("--workloads", default="spread,burst", help="spread,burst")
    p.add_argument("--seconds", type=float, help="run time after start-up (12; quick 6)")
    p.add_argument("--period", type=float, default=10.0, help="spread: every= seconds (10)")
    p.add_argument("--burst-max", type=int, default=10_000, help="largest N for burst")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "norc-bench")
    p.add_argument("--json", help="also write every result to this JSON file")
    p.add_argument("--quiet-wait", type=float, help="wait up to this for an idle machine (10)")
    args = p.parse_args(argv)
    global QUIET_WAIT
    QUIET_WAIT = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 10.0)
    if args.json:
        args.json = str(Path(args.json).resolve())
    args.workdir = args.workdir.resolve()
    sizes = [
        int(x)
        for x in (args.sizes or ("1000,10000" if args.quick else "1000,10000,100000")).split(",")
    ]
    backends = (
        args.backends or ("sqlite,postgresql" if args.quick else "sqlite,postgresql,mariadb")
    ).split(",")
    period = args.period
    seconds = args.seconds or (period / 2 + 1 if args.quick else period + 2)
    workloads = [w for w in args.workloads.split(",") if w]
    args.workdir.mkdir(parents=True, exist_ok=True)
    info = bl.machine_info(backends)
    bl.print_machine(info)
    print(f"command: python bench/scheduler.py {' '.join(argv)}\n", flush=True)
    results = []
    for backend in backends:
        for workload in workloads:
            for n in sizes:
                if workload == "burst" and n > args.burst_max:
                    continue
                bl.progress(f"scheduler {backend} {workload} n={n:,}")
                results.append(run_one(backend, args.workdir, workload, n, seconds, period))
    bl.print_table(
        f"Scheduler: lateness (ms), start-up, CPU and memory (run {seconds:g} s after start-up)",
        [
            "backend",
            "workload",
            "schedules",
            "fires/s",
            "late p50",
            "late p99",
            "late max",
            "committed p50",
            "committed p99",
            "skipped",
            "load s",
            "CPU s/s",
            "load CPU s",
            "RSS MB",
            "peak MB",
        ],
        [
            [
                r["backend"],
                r["workload"],
                r["n"],
                r["fires_per_s"],
                r["late_p50"],
                r["late_p99"],
                r["late_max"],
                r["committed_p50"],
                r["committed_p99"],
                r["skipped"],
                r["load_s"],
                r["cpu_per_s"],
                r["cpu_load_s"],
                r["rss_end_mb"],
                r["hwm_mb"],
            ]
            for r in results
        ],
        [
            "fires/s: fires after start-up / their fire-time span."
            " late: enqueued_at - fire_time from the rows (fires after start-up only);"
            " committed: fire transaction committed - fire_time.",
            f"spread: every={period:g} s, first fires spread over one period (N/{period:g}"
            " fires/s); burst: cron '* * * * * *', all N due together every second.",
            "load s: scheduler start until len(held) == N; CPU s/s: scheduler process CPU"
            " seconds per second after start-up (spread runs last until one period of fires"
            " has passed); RSS: VmRSS at the end, peak: VmHWM.",
        ],
    )
    bl.print_table(
        "Scheduler: where the time goes",
        [
            "backend",
            "workload",
            "schedules",
            "fire tx",
            "fire tx p50 ms",
            "fire tx max ms",
            "lease round p50",
            "lease round max",
            "count p50 ms",
            "count max ms",
            "change poll p50",
            "change poll max",
            "RSS base MB",
            "RSS loaded MB",
            "KB/schedule",
            "insert s",
        ],
        [
            [
                r["backend"],
                r["workload"],
                r["n"],
                r["fire_tx"],
                r["fire_tx_p50_ms"],
                r["fire_tx_max_ms"],
                r.get("lease_round_p50_ms"),
                r.get("lease_round_max_ms"),
                r["count_p50_ms"],
                r["count_max_ms"],
                r.get("apply_changes_p50_ms"),
                r.get("apply_changes_max_ms"),
                r["rss_base_mb"],
                r["rss_loaded_mb"],
                1024 * (r["rss_loaded_mb"] - r["rss_base_mb"]) / r["n"],
                r["create_s"],
            ]
            for r in results
        ],
        [
            "fire tx: fire transactions (all schedules due at one moment go in one);"
            " count: the lease round's read of schedules per holder (one GROUP BY of the"
            " table every heartbeat_interval, 3 s; no row is written to keep a lease);",
            "lease round (count + live schedulers + acquire) and change poll (every 0.5 s)"
            " run on the scheduler's only thread: no fire goes out while they run.",
        ],
    )
    bl.save_json(args.json, {"machine": info, "argv": argv, "results": results})


if __name__ == "__main__":
    main(sys.argv[1:])
