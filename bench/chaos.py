# ruff: noqa: E402  (sys.path is fixed before the imports, see below)
"""Chaos benchmark: daemons SIGKILLed and replaced at random while schedules fire.

    python bench/chaos.py                          # 5 minutes on PostgreSQL (norc_chaos)
    python bench/chaos.py --backend mariadb --minutes 3
    python bench/chaos.py --backend sqlite
    python bench/chaos.py --scenario outage        # private PostgreSQL stopped for 30 s
    python bench/chaos.py --scenario partition     # executors in network namespaces, one cut

Three ``norc scheduler`` and three ``norc executor`` processes (the CLI, each with
NORC_DATABASE_URL) run ~100 schedules (``every=`` 1-5 s and cron ``*/2``/``*/3`` second
specs), a separate process enqueues a steady stream and a Job (``a -> b, c -> d``) every
few seconds, and every 3-6 s a random daemon is SIGKILLed and a new one started in its
place. Every task body is ``bench.chaos_tasks.Record``: it appends one line per finished
body to an O_APPEND record file.

After the storm the killing stops, the survivors get ``--settle`` seconds to take over
dead daemons' work, then the enqueuer, the schedulers and the executors are stopped
cleanly (SIGINT), and the run is checked from the database and from the record file:

- every fire the specs call for in the run's window is present exactly once (computed
  here from the specs, not by Norc's code; a missed fire recorded SKIPPED counts);
- every instance is final (no CREATED/QUEUED/RUNNING left);
- every fire, enqueue and Job node that was not SKIPPED ran its body (one line);
- no body ran twice, except after an INTERRUPTED attempt that was retried ("explained";
  the gap between the body's end and its executor's death is reported, since a body
  that finished well before the kill was not interrupted);
- each Job node started only after its parents succeeded (DB status and record times);
- no process of the run survives the clean stop (orphaned worker processes).

Heartbeats are 1 s with a 6 s timeout (so a dead daemon is settled within seconds; a
dead scheduler's schedules are then missed for ~6 s, longer than the 5 s misfire grace,
which exercises the catch-up path). Everything the run starts is stopped and every
namespace removed at the end, also on failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

_here = str(Path(__file__).resolve().parent)
_repo = str(Path(__file__).resolve().parent.parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _here]
if _repo not in sys.path:
    sys.path.insert(0, _repo)

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

REPO = Path(_repo)
NORC_BIN = str(Path(sys.executable).with_name("norc"))
ACTIVE = ("CREATED", "QUEUED", "RUNNING")
DEFAULT_URLS = {
    "postgresql": "postgresql://postgres@127.0.0.1:5432/norc_chaos",
    "mariadb": "mysql://root@127.0.0.1:3306/norc_chaos",
}
PERIODS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
CRON_SPECS = ("*/2 * * * * *", "*/3 * * * * *")
JOB_NODES = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


@dataclass
class Config:
    """One chaos run."""

    backend: str = "postgresql"
    url: str | None = None
    minutes: float = 5.0
    schedules: int = 100
    cron_share: float = 0.2
    schedulers: int = 3
    executors: int = 3
    concurrency: int = 4
    kill_every: tuple[float, float] = (3.0, 6.0)
    #: Kill schedulers and executors in turn instead of at random (the CI test: every
    #: run then kills both kinds).
    alternate_kills: bool = False
    #: Which daemons the storm kills.
    kill_kinds: tuple[str, ...] = ("scheduler", "executor")
    enqueue_every: float = 0.25
    #: Every this many seconds the stream enqueues a 3 s body instead (one likely to be
    #: running when its executor is killed).
    long_every: float = 2.0
    long_seconds: float = 3.0
    #: Before killing an executor, enqueue this many short instances and wait 0.3 s, so
    #: that the victim holds work claimed ahead and bodies that just finished (half of
    #: them ``chaos-enq``, never retried, half ``chaos-burst``, retried twice).
    burst_before_kill: int = 0
    #: Also kill each executor started to replace a killed one this many seconds after
    #: its start (after a burst), while its workers may still be starting: work it has
    #: claimed then has not started anywhere.
    kill_replacement_after: float | None = None
    job_every: float = 4.0
    settle: float = 20.0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 6.0
    scenario: str = "storm"  # storm | outage | partition
    cut_seconds: float = 30.0
    seed: int | None = None
    workdir: Path | None = None
    quiet: bool = False


@dataclass
class Result:
    """What a run counted; ``problems`` lists examples of each anomaly with evidence."""

    counts: dict[str, Any] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    table: str = ""

    def add(self, kind: str, text: str) -> None:
        self.problems.setdefault(kind, []).append(text)


# -- databases -------------------------------------------------------------------------


#: Seconds after a SIGKILL by which every process of the killed daemon must be gone
#: ("within a second or two"; the runs in docs/reliability.md before this round used 1).
OUTLIVE_AFTER = 2.0
#: A body that ends this soon after its executor's SIGKILL ended as the worker was being
#: killed (a worker needs tens of milliseconds to see its executor gone and kill its
#: group): it counts as finished at the kill (a result not recorded), not as outliving.
REACTION = 0.5


def engine_for(url: str) -> sa.Engine:
    from norc.store.connections import normalise_url

    return sa.create_engine(normalise_url(url))


def fresh_server_database(url: str) -> str:
    """Create the ``norc_chaos*`` database named by ``url`` if needed, and empty it."""
    parsed = sa.engine.make_url(url)
    name = parsed.database or ""
    if not name.startswith("norc_chaos"):
        raise SystemExit(f"refusing to use database {name!r}: chaos runs use norc_chaos* only")
    admin_db = "postgres" if parsed.get_backend_name().startswith("postgres") else None
    # URL.set(database=None) keeps the database: build the server's URL without it
    admin_url = sa.engine.URL.create(
        parsed.drivername,
        username=parsed.username,
        password=parsed.password,
        host=parsed.host,
        port=parsed.port,
        database=admin_db,
        query=parsed.query,
    )
    from tests.servers import create_database

    create_database(admin_url.render_as_string(hide_password=False), name)
    from norc.store.schema import metadata

    eng = engine_for(url)
    try:
        with eng.begin() as conn:
            metadata.drop_all(conn)
            conn.execute(sa.text("DROP TABLE IF EXISTS norc_alembic_version"))
    finally:
        eng.dispose()
    return url


class ChaosPostgres:
    """A private PostgreSQL server (tests/servers.py's PrivatePostgres) that may also
    listen on veth addresses, for the outage and partition scenarios."""

    def __init__(self, extra_listen: list[str] | None = None) -> None:
        from tests.servers import PrivatePostgres

        self.pg = PrivatePostgres()
        self.extra = extra_listen or []
        if self.extra:
            hba = self.pg.dir / "data" / "pg_hba.conf"
            with hba.open("a") as f:
                f.write("host all all 10.200.0.0/16 trust\n")
        self.port = self.pg.port
        self.url = self.pg.url

    def start(self) -> None:
        if not self.extra:
            self.pg.start()
            return
        listen = ",".join(["127.0.0.1", *self.extra])
        self.pg._as_postgres(
            str(self.pg.bin / "pg_ctl"),
            "-D",
            str(self.pg.dir / "data"),
            "-w",
            "-l",
            str(self.pg.dir / "log"),
            "-o",
            f"-p {self.port} -k {self.pg.dir} -c listen_addresses={listen} -c max_connections=200",
            "start",
        )

    def stop(self) -> None:
        self.pg.stop()

    def destroy(self) -> None:
        self.pg.destroy()


# -- network namespaces (the partition scenario) ---------------------------------------


class Namespaces:
    """One network namespace per executor slot, joined to the host by a veth pair:
    host side 10.200.(k+1).1, namespace side 10.200.(k+1).2."""

    def __init__(self, count: int, tag: str) -> None:
        self.names = [f"nchaos{tag}{k}" for k in range(count)]
        self.host_links = [f"vch{tag}{k}" for k in range(count)]
        self.created: list[int] = []

    def host_address(self, k: int) -> str:
        return f"10.200.{k + 1}.1"

    def setup(self) -> None:
        if not shutil.which("ip"):
            raise SystemExit("the partition scenario needs iproute2: apt-get install -y iproute2")
        for k, (ns, link) in enumerate(zip(self.names, self.host_links, strict=True)):
            peer = f"vcn{link[3:]}"
            _ip("netns", "add", ns)
            self.created.append(k)
            _ip("link", "add", link, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", ns)
            _ip("addr", "add", f"{self.host_address(k)}/24", "dev", link)
            _ip("link", "set", link, "up")
            _ip("-n", ns, "addr", "add", f"10.200.{k + 1}.2/24", "dev", peer)
            _ip("-n", ns, "link", "set", peer, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def cut(self, k: int, up: bool) -> None:
        _ip("link", "set", self.host_links[k], "up" if up else "down")

    def wrap(self, k: int, argv: list[str]) -> list[str]:
        """Run ``argv`` in namespace ``k`` under its own host name (a UTS namespace)."""
        script = f"hostname chaos-e{k} && exec " + " ".join(_quote(a) for a in argv)
        return ["ip", "netns", "exec", self.names[k], "unshare", "--uts", "sh", "-c", script]

    def teardown(self) -> None:
        for k in self.created:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "del", self.host_links[k])
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", self.names[k])
        self.created = []


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


# -- the run ---------------------------------------------------------------------------


@dataclass
class Daemon:
    kind: str  # scheduler | executor
    slot: int
    proc: subprocess.Popen[bytes]
    started: float
    log: Path


class Chaos:
    """Starts, kills and replaces the daemons of one run, then checks what happened."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.run_id = uuid.uuid4().hex[:8]
        self.workdir = cfg.workdir or Path(tempfile.mkdtemp(prefix="norc-chaos-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.record = self.workdir / "record.jsonl"
        self.enqueued = self.workdir / "enqueued.jsonl"
        self.daemon_dir = self.workdir / "daemons"
        self.daemon_dir.mkdir(exist_ok=True)
        self.events: list[dict[str, Any]] = []
        self.daemons: list[Daemon] = []
        self.enqueuer: subprocess.Popen[bytes] | None = None
        self.loads: list[float] = []
        self.server: ChaosPostgres | None = None
        self.netns: Namespaces | None = None
        self.url = ""
        self.seq = 0
        self.paused_kills = False
        self.pending_children: list[tuple[float, int, list[int]]] = []
        self._burst_app: Any = None
        self.fresh_kills: list[tuple[float, Daemon]] = []
        self.cut_started = False
        self._next_watch = 0.0
        self._watch_engine: sa.Engine | None = None
        self._watched: dict[int, tuple[Any, ...]] = {}

    def say(self, text: str) -> None:
        if not self.cfg.quiet:
            print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)

    def event(self, what: str, **info: Any) -> None:
        self.events.append({"t": time.time(), "what": what, **info})

    # -- setup ---------------------------------------------------------------------

    def prepare_database(self) -> None:
        cfg = self.cfg
        if cfg.scenario in ("outage", "partition"):
            extra: list[str] = []
            if cfg.scenario == "partition":
                self.netns = Namespaces(cfg.executors, self.run_id[:3])
                self.netns.setup()
                extra = [self.netns.host_address(k) for k in range(cfg.executors)]
            self.server = ChaosPostgres(extra)
            self.server.start()
            self.url = self.server.url
        elif cfg.backend == "sqlite":
            path = self.workdir / "chaos.db"
            self.url = f"sqlite:///{path}"
        else:
            self.url = fresh_server_database(cfg.url or DEFAULT_URLS[cfg.backend])

    def create_schema(self) -> None:
        """Create Norc's tables before six daemons start on the empty database at once."""
        import norc

        app = norc.Norc(self.url, log_dir=self.workdir / "logs")
        try:
            app.tasks()
        finally:
            app.close()

    def create_work(self) -> float:
        """Tasks, schedules and the Job; returns the window start (epoch seconds)."""
        import norc
        from bench.chaos_tasks import Record
        from norc.jobs import Job

        cfg = self.cfg
        app = norc.Norc(self.url, log_dir=self.workdir / "logs")
        try:
            n_cron = round(cfg.schedules * cfg.cron_share)
            for k in range(cfg.schedules):
                retries = 2 if k % 2 else 0
                app.save_task(
                    Record(
                        name=f"chaos-s{k}",
                        record=str(self.record),
                        tag=f"s{k}",
                        seconds=round(self.rng.uniform(0.02, 0.2), 3),
                        max_retries=retries,
                        retry_delay=0.5,
                    )
                )
            # the tasks first: saving them may take seconds on a loaded machine
            t0 = float(int(time.time()) + 4)
            start = datetime.fromtimestamp(t0, UTC)
            for k in range(cfg.schedules):
                make_up = self.rng.random() < 0.5
                if k < n_cron:
                    app.add_schedule(f"chaos-s{k}", cron=CRON_SPECS[k % 2], make_up=make_up)
                else:
                    period = self.rng.choice(PERIODS)
                    offset = self.rng.randrange(int(period * 2)) / 2
                    app.add_schedule(
                        f"chaos-s{k}",
                        every=period,
                        start=start + timedelta(seconds=offset),
                        make_up=make_up,
                    )
            app.save_task(Record(name="chaos-enq", record=str(self.record), tag="enq"))
            app.save_task(
                Record(
                    name="chaos-long",
                    record=str(self.record),
                    tag="long",
                    seconds=cfg.long_seconds,
                )
            )
            app.save_task(
                Record(
                    name="chaos-burst",
                    record=str(self.record),
                    tag="burst",
                    max_retries=2,
                    retry_delay=0.5,
                )
            )
            job = Job(name="chaos-job")
            nodes = {}
            for node, parents in JOB_NODES.items():
                app.save_task(
                    Record(
                        name=f"chaos-j{node}",
                        record=str(self.record),
                        tag=f"job:{node}",
                        seconds=0.1,
                        max_retries=1,
                        retry_delay=0.5,
                    )
                )
                nodes[node] = job.add(
                    f"chaos-j{node}", name=node, after=[nodes[p] for p in parents]
                )
            app.save_task(job)
        finally:
            app.close()
        return t0

    # -- processes -----------------------------------------------------------------

    def env(self, url: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
            "NORC_DATABASE_URL": url,
            "NORC_LOG_DIR": str(self.workdir / "logs"),
            "NORC_HEARTBEAT_INTERVAL": str(self.cfg.heartbeat_interval),
            "NORC_HEARTBEAT_TIMEOUT": str(self.cfg.heartbeat_timeout),
            "NORC_CHAOS_RUN": self.run_id,
        }

    def start_daemon(self, kind: str, slot: int) -> Daemon:
        self.seq += 1
        log = self.daemon_dir / f"{kind}-{slot}-{self.seq}.log"
        url = self.url
        argv = [NORC_BIN, kind]
        if kind == "executor":
            argv += ["-c", str(self.cfg.concurrency)]
        if kind == "executor" and self.netns is not None and self.server is not None:
            host = self.netns.host_address(slot)
            url = f"postgresql://postgres@{host}:{self.server.port}/postgres"
            argv = self.netns.wrap(slot, argv)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                env=self.env(url),
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        d = Daemon(kind, slot, proc, time.time(), log)
        self.daemons.append(d)
        self.event("start", kind=kind, slot=slot, pid=proc.pid, log=log.name)
        return d

    def alive(self) -> list[Daemon]:
        return [d for d in self.daemons if d.proc.poll() is None]

    def start_enqueuer(self, until: float) -> None:
        argv = [
            sys.executable,
            "-m",
            "bench.chaos",
            "enqueue",
            "--db",
            self.url,
            "--out",
            str(self.enqueued),
            "--every",
            str(self.cfg.enqueue_every),
            "--job-every",
            str(self.cfg.job_every),
            "--long-every",
            str(self.cfg.long_every),
            "--until",
            str(until),
        ]
        with (self.daemon_dir / "enqueuer.log").open("wb") as out:
            self.enqueuer = subprocess.Popen(
                argv, env=self.env(self.url), cwd=self.workdir, stdout=out, stderr=out
            )

    def supervise(self) -> None:
        """Replace daemons that exited by themselves (recorded: they should not)."""
        for d in list(self.daemons):
            if d.proc.poll() is not None and not getattr(d, "replaced", False):
                d.replaced = True  # type: ignore[attr-defined]
                self.event("exited", kind=d.kind, slot=d.slot, pid=d.proc.pid, rc=d.proc.returncode)
                self.say(f"{d.kind} pid {d.proc.pid} exited by itself (rc {d.proc.returncode})")
                self.start_daemon(d.kind, d.slot)

    def kill_one(self, victim: Daemon | None = None) -> None:
        candidates = [victim] if victim is not None else self.alive()
        if victim is None:
            candidates = [d for d in candidates if d.kind in self.cfg.kill_kinds]
        if self.cfg.scenario == "partition" and victim is None:
            # the executor in slot 0 is the one cut off: it must have a history to lose
            candidates = [d for d in candidates if (d.kind, d.slot) != ("executor", 0)]
        if self.cfg.alternate_kills:
            kind = ("scheduler", "executor")[sum(1 for e in self.events if e["what"] == "kill") % 2]
            candidates = [d for d in candidates if d.kind == kind] or candidates
        if not candidates:
            return
        d = self.rng.choice(candidates)
        if d.kind == "executor" and self.cfg.burst_before_kill:
            self.burst(self.cfg.burst_before_kill)
            time.sleep(0.3)
        children = descendants(d.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait()
        d.replaced = True  # type: ignore[attr-defined]
        self.event(
            "kill",
            kind=d.kind,
            slot=d.slot,
            pid=d.proc.pid,
            children=children,
            age=round(time.time() - d.started, 2),
        )
        self.pending_children.append((time.time(), d.proc.pid, children))
        new = self.start_daemon(d.kind, d.slot)
        after = self.cfg.kill_replacement_after
        if d.kind == "executor" and after is not None and victim is None:
            self.fresh_kills.append((new.started + after, new))

    def kill_fresh(self) -> None:
        """The kills planned by ``kill_replacement_after`` that are due."""
        now = time.time()
        for due, d in list(self.fresh_kills):
            if now >= due:
                self.fresh_kills.remove((due, d))
                if d.proc.poll() is None:
                    self.kill_one(victim=d)

    def burst(self, count: int) -> None:
        """Enqueue ``count`` short instances now; their ids join the enqueue record."""
        import norc

        if self._burst_app is None:
            self._burst_app = norc.Norc(self.url, log_dir=self.workdir / "logs")
        t = time.time()
        out = []
        for task in ("chaos-enq", "chaos-burst"):
            try:
                ids = self._burst_app.enqueue_many(task, count // 2)
                out += [{"t": t, "task": task, "id": i, "burst": True} for i in ids]
            except Exception as exc:  # noqa: BLE001 - recorded, the storm goes on
                out.append({"t": t, "task": task, "error": repr(exc)[:200], "burst": True})
        data = "".join(json.dumps(e) + "\n" for e in out).encode()
        fd = os.open(self.enqueued, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def check_children(self, after: float = OUTLIVE_AFTER, force: bool = False) -> None:
        """Processes of a killed daemon still alive ``after`` seconds after the kill."""
        now = time.time()
        keep = []
        for t, pid, children in self.pending_children:
            if now - t < after and not force:
                keep.append((t, pid, children))
                continue
            alive = [c for c in children if _alive(c)]
            if alive:
                self.event("outlived", pid=pid, killed_at=t, alive=alive, after=now - t)
        self.pending_children = keep

    def wait_for_daemons(self, count: int, timeout: float = 60) -> None:
        eng = engine_for(self.url)
        from norc.store.schema import daemons

        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(sa.exc.SQLAlchemyError), eng.connect() as conn:
                    live = conn.execute(
                        sa.select(sa.func.count())
                        .select_from(daemons)
                        .where(daemons.c.status == "RUNNING")
                    ).scalar_one()
                    if live >= count:
                        return
                self.supervise()
                time.sleep(0.5)
        finally:
            eng.dispose()
        raise RuntimeError(f"fewer than {count} daemons came up within {timeout} s")

    def storm(self, t0: float) -> tuple[float, float]:
        """The kill loop until the end of the storm; returns (storm end, fires end)."""
        cfg = self.cfg
        storm_end = t0 + cfg.minutes * 60
        mid = t0 + (storm_end - t0) / 2 - cfg.cut_seconds / 2
        scenario_done = cfg.scenario == "storm"
        next_kill = time.time() + self.rng.uniform(*cfg.kill_every)
        next_load = 0.0
        while time.time() < storm_end:
            now = time.time()
            if now >= next_load:
                self.loads.append(os.getloadavg()[0])
                next_load = now + 5
            if not scenario_done and now >= mid:
                scenario_done = True
                self.scenario_cut()
                next_kill = time.time() + self.rng.uniform(*cfg.kill_every)
                continue
            if now >= next_kill:
                self.kill_one()
                next_kill = now + self.rng.uniform(*cfg.kill_every)
            self.kill_fresh()
            self.watch_cut_rows()
            self.supervise()
            self.check_children()
            time.sleep(0.1)
        self.check_children(force=True)
        self.event("storm end")
        self.say(f"storm over; {cfg.settle:.0f} s for the survivors to settle")
        settle_end = time.time() + cfg.settle
        while time.time() < settle_end:
            self.supervise()
            time.sleep(0.2)
        return storm_end, time.time()

    def watch_cut_rows(self) -> None:
        """In the partition scenario, from the cut on: the cut-off executor's daemon rows,
        an event each time one changes (status, heartbeat, ended_at)."""
        if self.cfg.scenario != "partition" or not self.cut_started:
            return
        now = time.time()
        if now < self._next_watch:
            return
        self._next_watch = now + 0.5
        from norc.store.schema import daemons

        if self._watch_engine is None:
            self._watch_engine = engine_for(self.url)
        try:
            with self._watch_engine.connect() as conn:
                rows = conn.execute(
                    sa.select(
                        daemons.c.id, daemons.c.status, daemons.c.heartbeat, daemons.c.ended_at
                    ).where(daemons.c.host == "chaos-e0")
                ).all()
        except sa.exc.SQLAlchemyError:
            return
        for r in rows:
            state = (r.status, _ts(r.heartbeat), _ts(r.ended_at))
            if self._watched.get(r.id) != state:
                self._watched[r.id] = state
                self.event("cut row", id=r.id, status=r.status, heartbeat=state[1], ended=state[2])

    def scenario_cut(self) -> None:
        cfg = self.cfg
        if cfg.scenario == "outage" and self.server is not None:
            self.say(f"stopping the PostgreSQL server for {cfg.cut_seconds:.0f} s")
            self.event("server stop")
            self.server.stop()
            time.sleep(cfg.cut_seconds)
            self.server.start()
            self.event("server start")
            self.say("PostgreSQL server is back")
        elif cfg.scenario == "partition" and self.netns is not None:
            self.say(f"cutting executor slot 0's link for {cfg.cut_seconds:.0f} s")
            self.event("link down", slot=0)
            self.netns.cut(0, up=False)
            self.cut_started = True
            end = time.time() + cfg.cut_seconds
            while time.time() < end:
                # the others keep running; a cut-off executor that exits is restarted
                # (in its namespace, still cut off) like any other
                self.supervise()
                self.watch_cut_rows()
                time.sleep(0.2)
            self.netns.cut(0, up=True)
            self.event("link up", slot=0)
            self.say("link restored")

    def stop_all(self) -> None:
        """Stop the enqueuer, then schedulers, wait for the queue to drain, then executors."""
        if self.enqueuer is not None:
            try:
                self.enqueuer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.enqueuer.kill()
                self.enqueuer.wait()
        self.event("stop schedulers")
        for d in self.alive():
            if d.kind == "scheduler":
                d.proc.send_signal(signal.SIGINT)
        self._wait_procs([d for d in self.daemons if d.kind == "scheduler"], 30)
        self.event("drain")
        self.wait_drained(90)
        self.event("stop executors")
        for d in self.alive():
            d.proc.send_signal(signal.SIGINT)
        self._wait_procs(self.daemons, 60)
        self.event("stopped")

    def _wait_procs(self, daemons: list[Daemon], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for d in daemons:
            try:
                d.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.event("did not stop", kind=d.kind, slot=d.slot, pid=d.proc.pid)
                self.say(f"{d.kind} pid {d.proc.pid} did not stop in time: SIGKILL")
                d.proc.kill()
                d.proc.wait()

    def wait_drained(self, timeout: float) -> None:
        from norc.store.schema import instances

        eng = engine_for(self.url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(sa.exc.SQLAlchemyError), eng.connect() as conn:
                    active = conn.execute(
                        sa.select(sa.func.count())
                        .select_from(instances)
                        .where(instances.c.status.in_(ACTIVE))
                    ).scalar_one()
                    if active == 0:
                        return
                time.sleep(1)
        finally:
            eng.dispose()

    def orphans(self) -> list[dict[str, Any]]:
        """Processes still carrying this run's NORC_CHAOS_RUN marker."""
        marker = f"NORC_CHAOS_RUN={self.run_id}".encode()
        found = []
        me = os.getpid()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == me:
                continue
            try:
                env = (proc / "environ").read_bytes()
                if marker not in env.split(b"\0"):
                    continue
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                stat = (proc / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            found.append({"pid": int(proc.name), "ppid": ppid, "cmd": cmd.strip()[:120]})
        return found

    def kill_everything(self) -> None:
        for d in self.daemons:
            if d.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(d.proc.pid, signal.SIGKILL)
                d.proc.wait()
        if self.enqueuer is not None and self.enqueuer.poll() is None:
            self.enqueuer.kill()
            self.enqueuer.wait()
        for o in self.orphans():
            with contextlib.suppress(ProcessLookupError):
                os.kill(o["pid"], signal.SIGKILL)

    def run(self) -> Result:
        cfg = self.cfg
        self.say(f"workdir {self.workdir}; scenario {cfg.scenario}; backend {cfg.backend}")
        try:
            self.prepare_database()
            self.create_schema()
            for slot in range(cfg.schedulers):
                self.start_daemon("scheduler", slot)
            for slot in range(cfg.executors):
                self.start_daemon("executor", slot)
            self.wait_for_daemons(cfg.schedulers + cfg.executors)
            # The schedules are created once every daemon is up, their first fires a few
            # seconds later: a slow start (a loaded machine takes 10 s and more) must not
            # make the first fires missed ones.
            t0 = self.create_work()
            self.event("window start", at=t0)
            self.start_enqueuer(until=t0 + cfg.minutes * 60)
            self.say(
                f"{cfg.schedules} schedules, {cfg.schedulers} schedulers,"
                f" {cfg.executors} executors; storm for {cfg.minutes:g} min"
            )
            storm_end, fires_end = self.storm(t0)
            self.stop_all()
            leftovers = self.orphans()
            for o in leftovers:
                self.event("orphan", **o)
            self.kill_everything()
            self.say("checking")
            (self.workdir / "events.json").write_text(json.dumps(self.events))
            result = verify(self, t0, fires_end - 2.0, storm_end, leftovers)
            result.events = self.events
            return result
        finally:
            if self._watch_engine is not None:
                self._watch_engine.dispose()
            if self._burst_app is not None:
                with contextlib.suppress(Exception):
                    self._burst_app.close()
            self.kill_everything()
            if self.server is not None:
                self.server.destroy()
            if self.netns is not None:
                self.netns.teardown()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (by parent pid in /proc)."""
    parents: dict[int, list[int]] = defaultdict(list)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents[ppid].append(int(proc.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# -- the enqueuer (a process of its own) ------------------------------------------------


def enqueue_main(
    db: str, out: str, every: float, job_every: float, long_every: float, until: float
) -> None:
    """Enqueue ``chaos-enq`` every ``every`` s, ``chaos-job`` every ``job_every`` s and
    ``chaos-long`` every ``long_every`` s; one line per attempt: the id, or the error
    (then nothing was enqueued)."""
    import norc

    app = norc.Norc(db)
    next_job = time.time() + 1
    next_long = time.time() + 0.5
    with open(out, "a", buffering=1) as f:
        while time.time() < until:
            t = time.time()
            task = "chaos-enq"
            if t >= next_job:
                task, next_job = "chaos-job", t + job_every
            elif t >= next_long:
                task, next_long = "chaos-long", t + long_every
            try:
                iid = app.enqueue(task)
                f.write(json.dumps({"t": t, "task": task, "id": iid}) + "\n")
            except Exception as exc:  # noqa: BLE001 - recorded, the stream goes on
                f.write(json.dumps({"t": t, "task": task, "error": repr(exc)[:200]}) + "\n")
            time.sleep(max(0.0, every - (time.time() - t)))
    app.close()


# -- verification ------------------------------------------------------------------------


def expected_fires(row: dict[str, Any], lo: float, hi: float) -> list[float]:
    """Fire times (epoch seconds) of a schedule in [lo, hi], computed from its spec here."""
    if row["kind"] == "simple":
        start = row["start_at"].timestamp()
        period = row["period"]
        k = max(0, int((lo - start) // period))
        out = []
        while True:
            t = start + k * period
            if t > hi:
                return out
            if t >= lo:
                out.append(round(t, 3))
            k += 1
    step = int(row["spec"].split()[0].split("/")[1])
    return [float(s) for s in range(int(lo) + (int(lo) < lo), int(hi) + 1) if (s % 60) % step == 0]


def _ts(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def verify(
    chaos: Chaos, lo: float, hi: float, storm_end: float, leftovers: list[dict[str, Any]]
) -> Result:
    """Check the run from the database and the record file."""
    from norc.store.schema import daemons, instances, schedules, tasks

    res = Result()
    eng = engine_for(chaos.url)
    try:
        with eng.connect() as conn:
            task_names = dict(conn.execute(sa.select(tasks.c.id, tasks.c.name)).all())
            sched_rows = [dict(r._mapping) for r in conn.execute(sa.select(schedules))]
            inst_rows = [dict(r._mapping) for r in conn.execute(sa.select(instances))]
            daemon_rows = [dict(r._mapping) for r in conn.execute(sa.select(daemons))]
    finally:
        eng.dispose()
    by_id = {r["id"]: r for r in inst_rows}
    # The rows as read, for looking into a run afterwards (private servers are removed).
    (chaos.workdir / "rows.json").write_text(
        json.dumps({"instances": inst_rows, "daemons": daemon_rows}, default=str)
    )
    for r in inst_rows:
        r["task"] = task_names.get(r["task_id"], "?")
    chains: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in inst_rows:
        chains[r["first_attempt_id"] or r["id"]].append(r)
    for chain in chains.values():
        chain.sort(key=lambda r: r["attempt"])

    lines: dict[int, list[dict[str, Any]]] = defaultdict(list)
    begun: set[int] = set()  # instances whose body began (a "begin" line)
    if chaos.record.exists():
        for raw in chaos.record.read_text().splitlines():
            if raw.strip():
                line = json.loads(raw)
                if "begin" in line:
                    begun.add(line["i"])
                else:
                    lines[line["i"]].append(line)
    kills = {
        (e["pid"]): e["t"] for e in chaos.events if e["what"] in ("kill", "exited") and "pid" in e
    }
    daemon_by_id = {d["id"]: d for d in daemon_rows}

    # 1. Fires: expected vs present, from the specs.
    expected = present = skipped = missing = duplicated = unexpected = 0
    firsts: dict[tuple[int, float], list[dict[str, Any]]] = defaultdict(list)
    for r in inst_rows:
        if r["schedule_id"] is not None and r["attempt"] == 1:
            firsts[(r["schedule_id"], round(_ts(r["fire_time"]) or 0, 3))].append(r)
    fire_keys: set[tuple[int, float]] = set()
    missing_by_schedule: Counter[int] = Counter()
    # A schedule's first fire is the first one after it was created (a start in the
    # past is no missed fire): on a loaded machine creating 100 schedules takes seconds.
    lo_of = {s["id"]: max(lo, _ts(s["created_at"]) or lo) for s in sched_rows}
    for s in sched_rows:
        for t in expected_fires(s, lo_of[s["id"]], hi):
            expected += 1
            key = (s["id"], t)
            fire_keys.add(key)
            rows = firsts.get(key, [])
            if not rows:
                missing += 1
                missing_by_schedule[s["id"]] += 1
                continue
            present += 1
            if all(r["status"] == "SKIPPED" for r in rows):
                skipped += 1
            if len(rows) > 1:
                duplicated += 1
                res.add(
                    "duplicated fire", f"schedule {s['id']} at {t}: ids {[r['id'] for r in rows]}"
                )
    sched_by_id = {s["id"]: s for s in sched_rows}
    for key, rows in firsts.items():
        # (a fire within 0.1 s after the creation may have been computed just before it)
        if key not in fire_keys and lo_of.get(key[0], lo) + 0.1 <= key[1] <= hi:
            unexpected += 1
            res.add(
                "unexpected fire", f"schedule {key[0]} at {key[1]}: ids {[r['id'] for r in rows]}"
            )
    for sid, n in sorted(missing_by_schedule.items(), key=lambda kv: -kv[1]):
        s = sched_by_id[sid]
        fired = sorted(
            _ts(r["fire_time"]) or 0 for (k, _), rs in firsts.items() if k == sid for r in rs
        )
        last = max(fired) if fired else None
        res.add(
            "missing fires",
            f"schedule {sid} ({s['kind']} {s['spec'] or s['period']}, make_up={s['make_up']}):"
            f" {n} missing; last fire present {_fmt_t(last)}, window ends {_fmt_t(hi)},"
            f" held by daemon {s['claimed_by']}",
        )

    # 2. Instances: final, ran, ran twice.
    in_scope: list[list[dict[str, Any]]] = []
    enq_ids = []
    enq_errors = 0
    if chaos.enqueued.exists():
        for raw in chaos.enqueued.read_text().splitlines():
            e = json.loads(raw)
            if "id" in e:
                enq_ids.append(e["id"])
            else:
                enq_errors += 1
    for key, rows in firsts.items():
        if lo <= key[1] <= hi:
            for r in rows:
                in_scope.append(chains[r["id"]])
    lost_enqueues = 0
    for iid in enq_ids:
        if iid not in by_id:
            lost_enqueues += 1
            res.add("enqueued id not in the database", str(iid))
        else:
            in_scope.append(chains[iid])
    # Job nodes come from the Jobs enqueued above.
    job_ids = [i for i in enq_ids if i in by_id and by_id[i]["task"] == "chaos-job"]
    nodes_of: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in inst_rows:
        if r["job_instance_id"] is not None:
            nodes_of[r["job_instance_id"]][r["job_node"]].append(r)
    for jid in job_ids:
        for node_rows in nodes_of[jid].values():
            for r in node_rows:
                if r["attempt"] == 1:
                    in_scope.append(chains[r["id"]])

    non_final = never_ran = twice_explained = twice_unexplained = finished_interrupted = 0
    cut_off = never_ran_marked = 0
    after_death = 0
    interrupted_gaps: list[float] = []
    all_non_final = [r for r in inst_rows if r["status"] in ACTIVE]
    non_final = len(all_non_final)
    for r in all_non_final[:10]:
        res.add(
            "non-final", f"instance {r['id']} {r['task']} {r['status']} executor {r['executor_id']}"
        )
    for chain in in_scope:
        head = chain[0]
        if head["task"] == "chaos-job":
            continue
        done = [ln for r in chain for ln in lines.get(r["id"], [])]
        statuses = [f"#{r['id']} a{r['attempt']} {r['status']}" for r in chain]
        if any(r["status"] in ACTIVE for r in chain):
            continue  # counted as non-final
        for r in chain:
            got = lines.get(r["id"], [])
            if got and r["status"] == "INTERRUPTED":
                died = _executor_death(r, daemon_by_id, kills)
                gap = (died - got[0]["end"]) if died else None
                if gap is not None and gap < -REACTION:
                    # the body ended well after its executor died: its worker outlived it
                    after_death += 1
                    kind = "body finished AFTER its executor died, recorded INTERRUPTED"
                else:
                    finished_interrupted += 1
                    if gap is not None:
                        interrupted_gaps.append(gap)
                    kind = "body finished BEFORE its executor died, recorded INTERRUPTED"
                res.add(
                    kind,
                    f"instance {r['id']} ({r['task']} attempt {r['attempt']}): body ended"
                    f" {_fmt_t(got[0]['end'])}, executor {r['executor_id']} died"
                    f" {_fmt_t(died)} ({'-' if gap is None else f'{gap:.2f}'} s later);"
                    f" error {str(r['error'])[:240]!r}; chain {statuses}",
                )
        if not done:
            if any(r["id"] in begun for r in chain):
                # Began and was cut off by a kill: recorded INTERRUPTED, not run again
                # (its task allows no retry); not lost work, unless it is not INTERRUPTED.
                cut_off += 1
                if chain[-1]["status"] != "INTERRUPTED":
                    never_ran += 1
                    res.add("cut off, not INTERRUPTED", f"{head['task']} chain {statuses}")
                continue
            if chain[-1]["status"] != "SKIPPED":
                never_ran += 1
                if chain[-1]["status"] == "INTERRUPTED" and chain[-1]["started_at"] is not None:
                    # Its start was recorded (handed to a worker, or sent ahead behind
                    # short runs) when the executor died: the documented window.
                    never_ran_marked += 1
                res.add(
                    "never ran",
                    f"{head['task']} chain {statuses};"
                    f" last error {str(chain[-1]['error'])[:120]!r}",
                )
            continue
        if len(done) > 1:
            per_instance = Counter(ln["i"] for ln in done)
            explained = all(n == 1 for n in per_instance.values()) and all(
                r["status"] == "INTERRUPTED" and r is not chain[-1]
                for r in chain
                if r["id"] in per_instance and r["id"] != done[-1]["i"]
            )
            if explained:
                twice_explained += 1
            else:
                twice_unexplained += 1
            res.add(
                "body ran twice " + ("(explained)" if explained else "(UNEXPLAINED)"),
                f"{head['task']} chain {statuses}; runs"
                f" {[(ln['i'], ln['host'], ln['pid'], _fmt_t(ln['end'])) for ln in done]}",
            )

    # 3. Jobs: children after parents.
    job_violations = jobs_unfinished = 0
    for jid in job_ids:
        job = by_id[jid]
        nodes = nodes_of[jid]
        if job["status"] != "SUCCESS":
            jobs_unfinished += 1
            res.add(
                "job not SUCCESS",
                f"job {jid} {job['status']} {str(job['error'])[:100]!r};"
                f" nodes { {n: [(r['id'], r['status']) for r in rs] for n, rs in nodes.items()} }",
            )
        for node, parents in JOB_NODES.items():
            for r in nodes.get(node, []):
                starts = [ln["start"] for ln in lines.get(r["id"], [])]
                if r["status"] == "SKIPPED" and not starts:
                    continue  # a descendant of a failed node, as it should be
                for p in parents:
                    p_ok = [q for q in nodes.get(p, []) if q["status"] == "SUCCESS"]
                    p_end = [ln["end"] for q in p_ok for ln in lines.get(q["id"], [])]
                    bad = not p_ok or (starts and p_end and min(starts) < min(p_end))
                    if bad:
                        job_violations += 1
                        res.add(
                            "job node before its parent",
                            f"job {jid} node {node} #{r['id']} started {starts} before"
                            f" parent {p} {[(q['id'], q['status']) for q in nodes.get(p, [])]}",
                        )

    # 4. Daemons: errors in their output and in their Norc logs (a scheduler that stopped
    # firing says why there).
    crashed_logs = 0
    for log in sorted(chaos.daemon_dir.glob("*.log")):
        text = log.read_text(errors="replace")
        if "Traceback" in text:
            crashed_logs += 1
            last = [ln for ln in text.splitlines() if ln.strip()][-1][:160]
            res.add("daemon output with a traceback", f"{log.name}: {last}")
    daemon_errors = daemon_log_errors(chaos.workdir / "logs")
    for (where, event, error), (n, files) in sorted(
        daemon_errors.items(), key=lambda kv: -kv[1][0]
    ):
        res.add(
            "errors in daemon logs",
            f"{n}x in {len(files)} {where} log(s) ({', '.join(sorted(files)[:4])}):"
            f" {event}: {error}",
        )
    outlived = [e for e in chaos.events if e["what"] == "outlived"]
    for e in outlived:
        res.add(
            f"processes of a killed daemon alive {OUTLIVE_AFTER:g} s later",
            f"daemon pid {e['pid']} killed {_fmt_t(e['killed_at'])}: pids {e['alive']}"
            f" still alive {e['after']:.1f} s later",
        )
    for o in leftovers:
        res.add("process left after the clean stop", f"pid {o['pid']} ppid {o['ppid']}: {o['cmd']}")

    # 5. Daemons settled dead that the harness had not killed (condemned while alive).
    dead_pids = {e["pid"] for e in chaos.events if e["what"] in ("kill", "exited")}
    condemned = [
        d
        for d in daemon_rows
        if "stopped beating" in str(d["error"] or "") and d["pid"] not in dead_pids
    ]
    for d in condemned:
        res.add(
            "settled dead while its process was alive",
            f"{d['kind']} {d['id']} on {d['host']} pid {d['pid']}: now {d['status']},"
            f" {str(d['error'])[:100]!r}",
        )
    if chaos.cfg.scenario == "partition":
        partition_checks(res, chaos, inst_rows, daemon_rows, lines)

    load = os.getloadavg()
    kills_n = sum(1 for e in chaos.events if e["what"] == "kill")
    c = res.counts
    c.update(
        {
            "window_s": round(hi - lo, 1),
            "expected_fires": expected,
            "present": present,
            "present_skipped": skipped,
            "missing": missing,
            "duplicated": duplicated,
            "unexpected_fires": unexpected,
            "enqueued": len(enq_ids),
            "enqueue_errors": enq_errors,
            "enqueued_lost": lost_enqueues,
            "jobs": len(job_ids),
            "jobs_not_success": jobs_unfinished,
            "job_order_violations": job_violations,
            "non_final": non_final,
            "never_ran": never_ran,
            "cut_off": cut_off,
            "never_ran_marked": never_ran_marked,
            "ran_twice_explained": twice_explained,
            "ran_twice_unexplained": twice_unexplained,
            "finished_then_interrupted": finished_interrupted,
            "finished_after_death": after_death,
            "kills": kills_n,
            "exited_by_themselves": sum(1 for e in chaos.events if e["what"] == "exited"),
            "leftover_processes": len(leftovers),
            "condemned_alive": len(condemned),
            "kills_leaving_processes": len(outlived),
            "daemon_logs_with_traceback": crashed_logs,
            "daemon_logs_with_errors": len({f for _n, fs in daemon_errors.values() for f in fs}),
            "body_lines": sum(len(v) for v in lines.values()),
            "instances": len(inst_rows),
            "load_max_1m": round(max(chaos.loads), 2) if chaos.loads else None,
            "load_avg_end": "/".join(f"{x:.2f}" for x in load),
        }
    )
    c["lost"] = missing + never_ran + lost_enqueues
    if interrupted_gaps:
        c["finished_then_interrupted_gap_s"] = (
            f"{min(interrupted_gaps):.2f}..{max(interrupted_gaps):.2f}"
        )
    res.table = format_table(chaos.cfg, c)
    return res


def partition_checks(
    res: Result,
    chaos: Chaos,
    inst_rows: list[dict[str, Any]],
    daemon_rows: list[dict[str, Any]],
    lines: dict[int, list[dict[str, Any]]],
) -> None:
    """The cut-off executor (host chaos-e0): what the others did with it, whether it kept
    claiming under a row already settled dead, and when it ran work again."""
    down = next((e["t"] for e in chaos.events if e["what"] == "link down"), None)
    up = next((e["t"] for e in chaos.events if e["what"] == "link up"), None)
    if down is None or up is None:
        return
    host = "chaos-e0"
    mine = [d for d in daemon_rows if d["host"] == host]
    c = res.counts
    for d in mine:
        res.add(
            "cut-off executor's daemon rows",
            f"daemon {d['id']} pid {d['pid']}: {d['status']} started {_fmt_t(_ts(d['started_at']))}"
            f" ended {_fmt_t(_ts(d['ended_at']))} {str(d['error'] or '')[:100]!r}",
        )
    # When the others settled it dead: the end of the instances they ended for it (its
    # row's ended_at may have been overwritten since, by the executor itself).
    settled: dict[int, float] = {}
    for d in mine:
        marker = f"executor {d['id']} on {host} stopped beating"
        ends = [
            _ts(r["ended_at"]) or 0
            for r in inst_rows
            if r["executor_id"] == d["id"] and str(r["error"] or "").startswith(marker)
        ]
        # else: the first time the harness saw its row ERROR (polled every 0.5 s)
        seen = [
            e["ended"] or e["t"]
            for e in chaos.events
            if e["what"] == "cut row" and e["id"] == d["id"] and e["status"] == "ERROR"
        ]
        if ends or seen:
            settled[d["id"]] = min(ends) if ends else min(seen)
    for e in chaos.events:
        if e["what"] == "cut row":
            res.add(
                "cut-off executor's row over time",
                f"{_fmt_t(e['t'])}: daemon {e['id']} {e['status']} heartbeat"
                f" {_fmt_t(e['heartbeat'])} ended {_fmt_t(e['ended'])}",
            )
    late_claims = [
        r
        for r in inst_rows
        if r["executor_id"] in settled
        and r["started_at"] is not None
        and (_ts(r["started_at"]) or 0) > settled[r["executor_id"]]
    ]
    c["bodies_after_settled_dead"] = sum(1 for r in late_claims if lines.get(r["id"]))
    c["cut_daemon_rows_settled_dead"] = len(settled)
    c["claims_after_settled_dead"] = len(late_claims)
    for r in late_claims[:20]:
        res.add(
            "claimed by an executor after it was settled dead",
            f"instance {r['id']} {r['task']} {r['status']} started {_fmt_t(_ts(r['started_at']))}"
            f" by daemon {r['executor_id']} (settled {_fmt_t(settled[r['executor_id']])})",
        )
    host_lines = [ln for lns in lines.values() for ln in lns if ln["host"] == host]
    during = [ln for ln in host_lines if down <= ln["end"] <= up]
    after = sorted(ln["start"] for ln in host_lines if ln["start"] > up)
    c["cut_bodies_finished_while_cut"] = len(during)
    c["cut_rejoin_s"] = round(after[0] - up, 1) if after else None
    c["cut_bodies_after_rejoin"] = len(after)
    twice_cut = [
        t
        for t in res.problems.get("body ran twice (explained)", [])
        + res.problems.get("body ran twice (UNEXPLAINED)", [])
        if f"'{host}'" in t
    ]
    c["cut_bodies_run_twice"] = len(twice_cut)


def daemon_log_errors(log_dir: Path) -> dict[tuple[str, str, str], tuple[int, set[str]]]:
    """Warnings and errors in the schedulers' and executors' own Norc logs, grouped by
    (kind, event, error text without numbers); settling dead daemons is expected, not
    counted."""
    found: dict[tuple[str, str, str], tuple[int, set[str]]] = {}
    pattern = re.compile(r'level=(warning|error|critical) event="([^"]*)"(?:.*? error="([^"]*)")?')
    for where in ("schedulers", "executors"):
        for log in sorted((log_dir / where).glob("*")):
            for line in log.read_text(errors="replace").splitlines():
                m = pattern.search(line)
                if not m or m[2] in EXPECTED_WARNINGS:
                    continue
                error = re.sub(r"\d+", "N", (m[3] or "")[:140])
                key = (where[:-1], m[2], error)
                n, files = found.get(key, (0, set()))
                files.add(log.name)
                found[key] = (n + 1, files)
    return found


#: Log events that are the system working as designed under chaos.
EXPECTED_WARNINGS = {"settled a dead daemon"}


def _executor_death(
    row: dict[str, Any], daemon_by_id: dict[int, dict[str, Any]], kills: dict[int, float]
) -> float | None:
    d = daemon_by_id.get(row["executor_id"])
    if d is None:
        return None
    return kills.get(d["pid"])


def _fmt_t(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")[:-3]


ROWS = [
    ("expected fires (from the specs)", "expected_fires"),
    ("present", "present"),
    ("  of which SKIPPED (missed)", "present_skipped"),
    ("missing", "missing"),
    ("duplicated", "duplicated"),
    ("fires at no expected time", "unexpected_fires"),
    ("enqueued (stream + jobs)", "enqueued"),
    ("  enqueue calls that failed", "enqueue_errors"),
    ("  ids not in the database", "enqueued_lost"),
    ("jobs not SUCCESS", "jobs_not_success"),
    ("job nodes before their parents", "job_order_violations"),
    ("non-final instances", "non_final"),
    ("bodies never run (not SKIPPED)", "never_ran"),
    ("  of which their start recorded", "never_ran_marked"),
    ("bodies cut off by a kill, INTERRUPTED", "cut_off"),
    ("bodies run twice, explained", "ran_twice_explained"),
    ("bodies run twice, unexplained", "ran_twice_unexplained"),
    ("bodies done BEFORE executor death, INTERR.", "finished_then_interrupted"),
    ("  body end -> executor death (s)", "finished_then_interrupted_gap_s"),
    ("bodies done AFTER executor death, INTERR.", "finished_after_death"),
    ("LOST (missing + never run)", "lost"),
    ("daemons SIGKILLed", "kills"),
    ("daemons that exited by themselves", "exited_by_themselves"),
    ("daemon outputs with a traceback", "daemon_logs_with_traceback"),
    ("daemon logs with errors/retries", "daemon_logs_with_errors"),
    ("daemons settled dead while alive", "condemned_alive"),
    (f"kills leaving processes alive {OUTLIVE_AFTER:g} s on", "kills_leaving_processes"),
    ("processes left after clean stop", "leftover_processes"),
    ("partition: cut-off rows settled dead", "cut_daemon_rows_settled_dead"),
    ("partition: claims after settled dead", "claims_after_settled_dead"),
    ("partition: their bodies run", "bodies_after_settled_dead"),
    ("partition: bodies finished while cut", "cut_bodies_finished_while_cut"),
    ("partition: its bodies run twice", "cut_bodies_run_twice"),
    ("partition: first body after restore (s)", "cut_rejoin_s"),
    ("partition: its bodies after restore", "cut_bodies_after_rejoin"),
    ("instances / body lines", None),
    ("load average max 1m / at end", None),
]


def format_table(cfg: Config, c: dict[str, Any]) -> str:
    title = (
        f"chaos: {cfg.scenario} on {cfg.backend}, {cfg.minutes:g} min, {cfg.schedules} schedules,"
        f" window {c['window_s']} s"
    )
    out = [title, "=" * len(title)]
    for label, key in ROWS:
        if key is None:
            value = (
                f"{c['instances']} / {c['body_lines']}"
                if label.startswith("instances")
                else f"{c['load_max_1m']} / {c['load_avg_end']}"
            )
        else:
            if key.startswith(("cut_", "claims_after", "bodies_after")) and key not in c:
                continue
            value = c.get(key, "-")
        out.append(f"{label:<42} {'-' if value is None else value!s:>12}")
    return "\n".join(out)


def print_result(res: Result, examples: int = 5) -> None:
    print(res.table)
    for kind, items in res.problems.items():
        print(f"\n{kind}: {len(items)}")
        for text in items[:examples]:
            print(f"  {text}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "enqueue":
        p = argparse.ArgumentParser(prog="chaos.py enqueue")
        p.add_argument("--db", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--every", type=float, default=0.25)
        p.add_argument("--job-every", type=float, default=4.0)
        p.add_argument("--long-every", type=float, default=2.0)
        p.add_argument("--until", type=float, required=True)
        a = p.parse_args(argv[1:])
        enqueue_main(a.db, a.out, a.every, a.job_every, a.long_every, a.until)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backend", choices=["postgresql", "mariadb", "sqlite"], default="postgresql")
    p.add_argument("--url", help="server database URL (a norc_chaos* database)")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--schedules", type=int, default=100)
    p.add_argument("--scenario", choices=["storm", "outage", "partition"], default="storm")
    p.add_argument("--settle", type=float, default=20.0)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--kill-kinds",
        default="scheduler,executor",
        help="which daemons to kill (comma-separated): scheduler, executor",
    )
    p.add_argument("--cut-seconds", type=float, default=30.0, help="outage/partition length")
    p.add_argument(
        "--burst", type=int, default=0, help="enqueue this many just before each executor kill"
    )
    p.add_argument(
        "--kill-replacement-after",
        type=float,
        help="also kill each replacement executor this many seconds after its start",
    )
    p.add_argument("--workdir", type=Path)
    p.add_argument("--json", type=Path, help="also write the counts, problems and events here")
    p.add_argument("--examples", type=int, default=5, help="examples printed per anomaly")
    a = p.parse_args(argv)
    if a.scenario != "storm" and a.backend != "postgresql":
        p.error("the outage and partition scenarios run on a private PostgreSQL server")
    cfg = Config(
        backend=a.backend,
        url=a.url,
        minutes=a.minutes,
        schedules=a.schedules,
        scenario=a.scenario,
        settle=a.settle,
        seed=a.seed,
        workdir=a.workdir,
        cut_seconds=a.cut_seconds,
        kill_kinds=tuple(k.strip() for k in a.kill_kinds.split(",") if k.strip()),
        burst_before_kill=a.burst,
        kill_replacement_after=a.kill_replacement_after,
    )
    res = Chaos(cfg).run()
    print_result(res, a.examples)
    if a.json:
        a.json.write_text(
            json.dumps(
                {"counts": res.counts, "problems": res.problems, "events": res.events}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
