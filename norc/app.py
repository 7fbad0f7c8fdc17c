"""The :class:`Norc` handle: one database, its plugins and settings, and the public API.

A process may hold any number of handles (on one database or several); nothing here
is global.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog

from norc.abc import LogStore, Queue, Task, check_name
from norc.alerts.delivery import AlertSender, NotificationRecord
from norc.alerts.rules import AlertRule, RuleCache
from norc.config import Settings
from norc.enqueue import announce, enqueue_rows
from norc.errors import (
    ConfigurationError,
    DuplicateRegistration,
    InvalidSpec,
    LogNotFound,
    NorcError,
    QueueGroupPush,
    UnknownQueue,
    UnknownTask,
)
from norc.logs import LogKeys, resolve_key
from norc.pluginmanager import PluginManager, build_plugin_manager
from norc.records import DaemonRecord, InstanceRecord, ScheduleRecord, TaskRecord
from norc.registry import APPLICATION, Registry
from norc.schedules.timing import Timing, check_delay, check_period, timing_for
from norc.status import InstanceStatus, Request
from norc.store.database import Database
from norc.store.schema import utcnow

if TYPE_CHECKING:
    from norc.executor.executor import Executor, Isolation
    from norc.scheduler.scheduler import Scheduler

log = structlog.get_logger("norc")


class Norc:
    """A handle on one Norc database.

    ``Norc()`` reads ``NORC_DATABASE_URL`` (default: ``norc.db`` in the working
    directory); ``Norc("postgresql://...")`` names one. The schema is created on first
    use. Arguments win over the environment, which wins over ``norc.toml``.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        log_dir: str | Path | None = None,
        log_store: str | None = None,
        log_store_settings: Mapping[str, Any] | None = None,
        plugins: Sequence[object] = (),
        disable_plugins: Sequence[str] | None = None,
        settings: Settings | None = None,
    ) -> None:
        given = (database_url, log_dir, log_store, log_store_settings, disable_plugins)
        if settings is not None and any(v is not None for v in given):
            raise ConfigurationError("pass either settings= or individual settings, not both")
        self.settings = settings or Settings.load(
            database_url=database_url,
            log_dir=log_dir,
            log_store=log_store,
            log_store_settings=dict(log_store_settings) if log_store_settings is not None else None,
            disable_plugins=tuple(disable_plugins) if disable_plugins is not None else None,
        )
        self.plugins: PluginManager = build_plugin_manager(
            disabled=self.settings.disable_plugins, extra=plugins
        )
        self.registry = Registry()
        self.plugins.fill_registry(self.registry)
        # A misconfigured log store fails here, not at the first upload in the background.
        self.registry.log_store(self.settings.log_store).validate_settings(
            self.settings.log_store_settings
        )
        self.db = Database(self.settings.database_url)
        self._queues: dict[str, Queue] = {}
        self._lock = threading.Lock()
        self._log_store: LogStore | None = None
        self._uploads: ThreadPoolExecutor | None = None
        #: The enabled alert rules, cached briefly (see norc.alerts.rules.RuleCache).
        self.alert_rules = RuleCache(self.db)
        #: Sends due notifications when a daemon's housekeeping wakes it.
        self.alert_sender = AlertSender(self)

    # -- tasks -----------------------------------------------------------------------

    def register_task_type(self, cls: type[Task]) -> None:
        """Make an application-defined Task subclass runnable by this handle."""
        existing = self.registry.task_type(cls.type_name)
        if existing is not None and existing is not cls:
            raise DuplicateRegistration(
                "task type",
                cls.type_name,
                f"{self.registry.task_type_owner(cls.type_name)} ({existing.__module__})",
                f"{APPLICATION} ({cls.__module__})",
            )
        self.registry.for_plugin(APPLICATION).add_task_type(cls)

    def save_task(self, task: Task, *, replace: bool = False) -> Task:
        """Save ``task`` under its unique name (``replace`` overwrites); returns it with its id."""
        cls = type(task)
        self.register_task_type(cls)
        params = task.params()
        task.on_save(self)
        task.id = self.db.insert_task(
            name=task.name,
            type=cls.type_name,
            type_path=f"{cls.__module__}:{cls.__qualname__}",
            plugin=self.registry.task_type_owner(cls.type_name) or APPLICATION,
            params=params,
            settings=task.settings(),
            replace=replace,
        )
        return task

    def task_record(self, ref: str | int) -> TaskRecord:
        """The stored task with this name or id."""
        return self.db.task(ref)

    def task(self, ref: str | int) -> Task:
        """The stored task with this name or id, as an object of its class."""
        from norc.executor.running import load_class

        record = self.db.task(ref)
        cls = self.registry.task_type(record.type) or load_class(record.type_path, record.type)
        return cls.from_params(
            name=record.name, params=record.params, id=record.id, **record.settings
        )

    def tasks(self) -> list[TaskRecord]:
        """Every stored task."""
        return self.db.list_tasks()

    # -- queues ----------------------------------------------------------------------

    def create_queue(self, name: str, type: str = "dbqueue", **settings: Any) -> None:
        """Create a queue; its type must be installed and its settings valid."""
        check_name("queue", name)
        cls = self.registry.queue_type(type)
        self.db.insert_queue(name, type, cls.validate_settings(settings))

    def create_queue_group(self, name: str, queues: Sequence[str]) -> None:
        """Create a queue group: executors given its name consume ``queues``, first first.

        A queue may belong to several groups; members may be of any queue types.
        """
        check_name("queue group", name)
        if not queues:
            raise ConfigurationError(f"queue group {name!r} needs at least one queue")
        for member in queues:
            self.queue(member)  # each must exist (and its type be installed)
        self.db.insert_queue_group(name, list(queues))

    def queue_members(self, name: str) -> list[str]:
        """The queues an executor given ``name`` consumes: a group's members, or the queue."""
        members = self.db.queue_group(name)
        if members is not None:
            return members
        self.queue(name)
        return [name]

    def queue(self, name: str) -> Queue:
        """The queue object for ``name`` (one per handle and name): for pushing, counting,
        releasing. Executors claim through objects of their own (:meth:`open_queue`)."""
        with self._lock:
            if name not in self._queues:
                self._queues[name] = self.open_queue(name)
            return self._queues[name]

    def open_queue(self, name: str) -> Queue:
        """A new queue object for ``name``, for one claimant; the caller closes it.

        What a queue keeps for whoever claims through it (the dbqueue's claim and LISTEN
        connection, and whether its last claim emptied the queue) must not be shared by
        two executors of one handle: one would wait out the other's wake-up, and the
        first to stop would close the other's connection.
        """
        try:
            type_name, settings = self.db.queue_row(name)
        except UnknownQueue:
            members = self.db.queue_group(name)
            if members is not None:
                raise QueueGroupPush(name, members) from None
            raise
        cls = self.registry.queue_type(type_name)
        return cls(name=name, settings=settings, db=self.db)

    def queues(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(name, type, settings) of every queue."""
        return self.db.list_queues()

    # -- instances -------------------------------------------------------------------

    def enqueue(self, task: Task | str | int, *, queue: str = "default", priority: int = 0) -> int:
        """Create one QUEUED instance of a saved task; returns its id."""
        return self.enqueue_many(task, 1, queue=queue, priority=priority)[0]

    def enqueue_many(
        self,
        task: Task | str | int,
        count: int,
        *,
        queue: str = "default",
        priority: int = 0,
    ) -> list[int]:
        """Create ``count`` QUEUED instances in one transaction; returns their ids.

        The task's overlap policy applies: with ``skip`` a run while another is active
        is recorded SKIPPED instead; with ``replace`` the active ones are stopped first.
        """
        q = self.queue(queue)
        ref = _task_ref(task)
        # The queue may do it all in one statement (dbqueue on PostgreSQL): the
        # enqueue's part of the enqueue→start latency is then one round trip.
        ids = q.create_and_push(ref, count, priority)
        if ids is None:
            return self._enqueue_in_transaction(q, ref, count, priority)
        announce(self, ids)  # the queue's own statement bypassed enqueue_rows
        return ids

    def _enqueue_in_transaction(
        self, q: Queue, task: str | int, count: int, priority: int
    ) -> list[int]:
        """The general enqueue: read the task, apply its overlap policy, insert, push."""
        from norc.lifecycle import overlap_verdict

        with self.db.transaction() as tx:
            # Read in the enqueuing transaction: one checkout and round trip fewer.
            record = self.db.task(task, tx.conn)
            verdict = overlap_verdict(self, tx, record.id, record.overlap, new_label="enqueue")
            now = utcnow()
            row: dict[str, Any] = {
                "task_id": record.id,
                "queue": q.name,
                "priority": priority,
                "attempt": 1,
                "created_at": now,
            }
            if verdict is None:
                row.update(status=InstanceStatus.QUEUED.value, enqueued_at=now)
            else:
                row.update(status=InstanceStatus.SKIPPED.value, ended_at=now, error=verdict)
            return enqueue_rows(self, tx, [row] * count, [record.type] * count)

    def stop_instance(self, instance_id: int, *, reason: str = "stopped by request") -> bool:
        """Stop one instance wherever it is: QUEUED becomes SKIPPED, RUNNING INTERRUPTED
        (its executor kills it within a second), a Job with all its nodes. False if it
        had already ended."""
        from norc.lifecycle import stop_instances

        self.db.instance(instance_id)
        with self.db.transaction() as tx:
            ended = stop_instances(self, tx, [instance_id], reason=reason)
        if ended:
            self.after_interrupt(ended)
        return bool(ended)

    def _task_for(self, task: Task | str | int) -> TaskRecord:
        return self.db.task(_task_ref(task))

    def instance(self, instance_id: int) -> InstanceRecord:
        """One instance."""
        return self.db.instance(instance_id)

    def instances(
        self,
        *,
        status: Collection[InstanceStatus] | None = None,
        since: datetime | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int | None = 100,
    ) -> list[InstanceRecord]:
        """Instances matching the filters, newest first."""
        return self.db.find_instances(
            statuses=status, since=since, task=task, queue=queue, limit=limit
        )

    # -- logs ------------------------------------------------------------------------

    @property
    def log_store(self) -> LogStore:
        """The configured log store (``local`` unless set)."""
        if self._log_store is None:
            cls = self.registry.log_store(self.settings.log_store)
            self._log_store = cls(
                settings=self.settings.log_store_settings, log_dir=self.settings.log_dir
            )
        return self._log_store

    @functools.cached_property
    def log_keys(self) -> LogKeys:
        """How this database names its logs (its installation id, read once)."""
        from norc.store.migrate import read_installation

        with self.db.reading() as conn:
            return LogKeys(*read_installation(conn))

    def _log_key(self, instance: InstanceRecord) -> str:
        # The key the run recorded; a running instance's is the one its executor made.
        return instance.log_key or self.log_keys.instance(
            instance.task_type, instance.task_name, instance.id
        )

    def log_path(self, instance: InstanceRecord) -> Path:
        """Where an instance's log is (or will be) on this host."""
        return resolve_key(self.settings.log_dir, self._log_key(instance))

    def daemon_log_path(self, kind: str, daemon_id: int) -> Path:
        """Where an executor's or scheduler's own log is on its host."""
        return resolve_key(self.settings.log_dir, self.log_keys.daemon(kind, daemon_id))

    def logs(self, instance_id: int, *, remote: bool = False) -> str:
        """An instance's log: the local file, else (or with ``remote``) the log store's copy."""
        instance = self.db.instance(instance_id)
        return self._read_log(f"instance {instance_id}", self._log_key(instance), remote=remote)

    def daemon_logs(self, daemon_id: int, *, remote: bool = False) -> str:
        """An executor's or scheduler's own log."""
        from norc.control import get_daemon

        daemon = get_daemon(self, daemon_id)
        key = self.log_keys.daemon(daemon.kind, daemon.id)
        return self._read_log(f"{daemon.kind} {daemon_id}", key, remote=remote)

    def _read_log(self, what: str, key: str, *, remote: bool) -> str:
        path = resolve_key(self.settings.log_dir, key)
        data: bytes | None = None
        if not remote:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                data = None
        if data is None:
            data = self.log_store.open(key)
        if data is None:
            where = "" if remote else f"not at {path} and "
            raise LogNotFound(
                f"no log for {what}: {where}not in the {self.settings.log_store!r} log store"
            )
        return data.decode("utf-8", "replace")

    def prune(self, older_than: timedelta, *, batch: int = 1000) -> dict[str, int]:
        """Delete history older than ``older_than``: final instances and their local logs,
        ended daemon rows and their logs. Works in batches; returns what it deleted."""
        cutoff = utcnow() - older_than
        counts = {"instances": 0, "daemons": 0, "log_files": 0}
        while True:
            deleted = self.db.prune_batch(cutoff, batch)
            if not deleted:
                break
            counts["instances"] += len(deleted)
            counts["log_files"] += self._remove_logs(key for _, key in deleted if key)
        gone = self.db.prune_daemons(cutoff)
        counts["daemons"] = len(gone)
        counts["log_files"] += self._remove_logs(self.log_keys.daemon(kind, i) for i, kind in gone)
        return counts

    def _remove_logs(self, keys: Iterable[str]) -> int:
        removed = 0
        for key in keys:
            try:
                resolve_key(self.settings.log_dir, key).unlink()
                removed += 1
            except (FileNotFoundError, NorcError):
                pass
        return removed

    def after_finish(self, instance_ids: Sequence[int], log_paths: Sequence[str | Path]) -> None:
        """Called once outcomes are committed: lifecycle hooks, then log upload."""
        if self.plugins.has_hook_impls("norc_instance_finished"):
            for instance in self.db.instances_by_id(instance_ids):
                self.plugins.notify("norc_instance_finished", instance=instance)
        if self.settings.log_store == "local":
            return
        with self._lock:
            if self._uploads is None:
                self._uploads = ThreadPoolExecutor(2, thread_name_prefix="norc-upload")
        for instance_id, path in zip(instance_ids, log_paths, strict=True):
            self._uploads.submit(self._upload, instance_id, Path(path))

    def keep_daemon_log(self, kind: str, daemon_id: int) -> None:
        """An executor's or scheduler's own log, once it has ended, goes to the log store.

        Called by the daemon itself as it ends; a failure is logged, never raised.
        """
        if self.settings.log_store == "local":
            return
        key = self.log_keys.daemon(kind, daemon_id)
        try:
            self.log_store.save(key, resolve_key(self.settings.log_dir, key))
        except Exception:
            log.exception(
                "daemon log upload failed", daemon=daemon_id, store=self.settings.log_store
            )

    def _upload(self, instance_id: int, path: Path) -> None:
        key = path.resolve().relative_to(self.settings.log_dir.resolve()).as_posix()
        try:
            location = self.log_store.save(key, path)
        except Exception:
            log.exception("log upload failed", instance=instance_id, store=self.settings.log_store)
            return
        if location:
            self.db.set_log_location(instance_id, location)

    # -- schedules -------------------------------------------------------------------

    def add_schedule(
        self,
        task: Task | str | int,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        start: datetime | float | timedelta | None = None,
        repetitions: int = 0,
        make_up: bool = False,
        tz: str = "UTC",
        queue: str = "default",
        priority: int = 0,
        paused: bool = False,
    ) -> ScheduleRecord:
        """Schedule a saved task: ``cron=`` any supported spec, or ``every=`` seconds.

        ``start`` (a datetime, or a delay in seconds) is when a simple schedule first
        fires; without it the first fire is one period from now. ``repetitions`` counts
        enqueued fires (0 = forever). ``make_up`` decides what happens to fires missed
        while no scheduler ran: enqueue each (True) or record each as SKIPPED (False).
        """
        record = self._task_for(task)
        self.queue(queue)  # an unknown queue fails now, not at the first fire
        values = _schedule_timing(cron, every, start, tz)
        if repetitions < 0:
            raise InvalidSpec(f"repetitions must be >= 0 (0 = forever), got {repetitions}")
        timing = timing_for(
            values["kind"], values["spec"], tz, values["start_at"], values["period"]
        )
        schedule_id = self.db.schedules.insert(
            task_id=record.id,
            queue=queue,
            priority=priority,
            timezone=tz,
            repetitions=repetitions,
            remaining=repetitions or None,
            make_up=make_up,
            next_fire_at=_first_fire(timing),
            paused=paused,
            deleted=False,
            **values,
        )
        return self.db.schedules.get(schedule_id)

    def schedule(self, schedule_id: int) -> ScheduleRecord:
        """One schedule."""
        return self.db.schedules.get(schedule_id)

    def schedules(
        self, *, task: str | None = None, include_deleted: bool = False
    ) -> list[ScheduleRecord]:
        """Schedules (of one task), oldest first."""
        return self.db.schedules.find(task=task, include_deleted=include_deleted)

    def update_schedule(
        self,
        schedule_id: int,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        start: datetime | float | timedelta | None = None,
        tz: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        repetitions: int | None = None,
        make_up: bool | None = None,
    ) -> ScheduleRecord:
        """Edit a schedule while schedulers run; its next fire is computed anew from now."""
        current = self.db.schedules.get(schedule_id)
        zone = tz or current.timezone
        values: dict[str, Any] = {"timezone": zone}
        if cron is not None or every is not None or start is not None:
            values.update(_schedule_timing(cron, every, start, zone))
        else:
            values.update(
                kind=current.kind,
                spec=current.spec,
                start_at=current.start_at,
                period=current.period,
            )
        if queue is not None:
            self.queue(queue)
            values["queue"] = queue
        if priority is not None:
            values["priority"] = priority
        if repetitions is not None:
            values.update(repetitions=repetitions, remaining=repetitions or None)
        if make_up is not None:
            values["make_up"] = make_up
        timing = timing_for(
            values["kind"], values["spec"], zone, values["start_at"], values["period"]
        )
        values["next_fire_at"] = _first_fire(timing)
        self.db.schedules.update(schedule_id, error=None, **values)
        return self.db.schedules.get(schedule_id)

    def pause_schedule(self, schedule_id: int) -> None:
        """Stop a schedule firing until resumed (its fires meanwhile are not made up)."""
        self.db.schedules.update(schedule_id, paused=True)

    def resume_schedule(self, schedule_id: int) -> None:
        """Fire again from the next fire time after now."""
        s = self.db.schedules.get(schedule_id)
        timing = timing_for(s.kind, s.spec, s.timezone, s.start_at, s.period)
        self.db.schedules.update(
            schedule_id, paused=False, error=None, next_fire_at=_first_fire(timing)
        )

    def delete_schedule(self, schedule_id: int) -> None:
        """Soft-delete a schedule: it never fires again; its history stays."""
        self.db.schedules.get(schedule_id)
        self.db.schedules.update(schedule_id, deleted=True)

    def scheduler(
        self,
        *,
        misfire_grace: float = 5.0,
        install_signal_handlers: bool = False,
        log_to_stderr: bool = False,
    ) -> Scheduler:
        """A scheduler; use it as a context manager or call ``start()``.

        ``log_to_stderr`` also sends its events through structlog (its log in the log
        store has them always); the ``norc scheduler`` command turns it on.
        """
        from norc.scheduler.scheduler import Scheduler

        return Scheduler(
            self,
            misfire_grace=misfire_grace,
            install_signal_handlers=install_signal_handlers,
            log_to_stderr=log_to_stderr,
        )

    def after_interrupt(self, instance_ids: Sequence[int]) -> None:
        """Instances ended INTERRUPTED outside an executor (a dead executor's): hooks."""
        if self.plugins.has_hook_impls("norc_instance_finished"):
            for instance in self.db.instances_by_id(instance_ids):
                self.plugins.notify("norc_instance_finished", instance=instance)

    # -- daemons ---------------------------------------------------------------------

    def executor(
        self,
        *,
        queue: str = "default",
        concurrency: int = 1,
        isolation: Isolation = "process",
        install_signal_handlers: bool = False,
        python: str | None = None,
        claim_ahead: float = 0.1,
        max_claim_wait: float = 1.0,
        log_to_stderr: bool = False,
    ) -> Executor:
        """An executor for ``queue``; use it as a context manager or call ``start()``.

        ``python`` names the interpreter its worker processes run (default: this one).
        ``claim_ahead``: besides one instance per idle slot, claim what the executor
        finished in this many seconds lately (0 turns it off); an instance claimed ahead
        that has not started after ``max_claim_wait`` seconds goes back to its queue.
        ``log_to_stderr`` also sends its events through structlog (its log in the log
        store has them always); the ``norc executor`` command turns it on.
        """
        from norc.executor.executor import Executor

        return Executor(
            self,
            queue=queue,
            concurrency=concurrency,
            isolation=isolation,
            install_signal_handlers=install_signal_handlers,
            python=python,
            claim_ahead=claim_ahead,
            max_claim_wait=max_claim_wait,
            log_to_stderr=log_to_stderr,
        )

    # -- control ---------------------------------------------------------------------

    def request(
        self,
        daemon_id: int,
        request: Request | str,
        *,
        kind: str | None = None,
        force: bool = False,
        wait: bool = False,
        timeout: float = 10.0,
    ) -> DaemonRecord:
        """Ask a running executor or scheduler to STOP, KILL, PAUSE, RESUME or RELOAD.

        With ``wait``, return once it has (raises ``ControlError`` after ``timeout``).
        ``force`` ends a daemon that is no longer alive (STOP/KILL) and settles its work.
        """
        from norc import control

        req = Request(request.upper()) if isinstance(request, str) else request
        record = control.send(self, daemon_id, req, kind=kind, force=force)
        if wait and record.ended_at is None:
            return control.wait(self, daemon_id, req, timeout)
        return record

    def request_host(self, host: str, request: Request | str) -> list[int]:
        """Send a request to every live daemon on ``host``; returns their ids."""
        from norc import control

        req = Request(request.upper()) if isinstance(request, str) else request
        return control.send_to_host(self, host, req)

    def daemons(self, kind: str | None = None) -> list[DaemonRecord]:
        """Executor and scheduler rows, newest first."""
        return self.db.daemons(kind=kind)

    # -- alerts ----------------------------------------------------------------------

    def add_alert(
        self,
        name: str,
        *,
        on: str | Sequence[str],
        task: str | None = None,
        schedule: int | None = None,
        email: str | None = None,
        smtp: str | None = None,
        webhook: str | None = None,
        format: str | None = None,
        channel: str | None = None,
        target: str | None = None,
        late_after: float | str | None = None,
        within: float | str | None = None,
        rate_limit: int | None = None,
        options: Mapping[str, Any] | None = None,
        replace: bool = False,
    ) -> AlertRule:
        """Save an alert rule: events ``on`` (``"failure,late"`` or a list; see
        docs/alerts.md) of the tasks matching the glob ``task`` and/or the fires of
        ``schedule`` go to ``email`` (through ``smtp``, an ``smtp://`` or ``smtps://``
        URL), to ``webhook`` (posted as ``format`` ``json`` or ``slack``) or to a
        plugin's ``channel`` with its ``target``. ``late_after`` and ``within`` are
        durations (``90``, ``15m``, ``26h``); ``rate_limit`` caps notifications a minute
        (default 10, 0 for none). ``options`` go to the channel. A name in use raises
        :class:`norc.alerts.channels.AlertError` unless ``replace``."""
        from norc.alerts import manage

        return manage.add_alert(
            self,
            name,
            on=on,
            task=task,
            schedule=schedule,
            email=email,
            smtp=smtp,
            webhook=webhook,
            format=format,
            channel=channel,
            target=target,
            late_after=late_after,
            within=within,
            rate_limit=rate_limit,
            options=options,
            replace=replace,
        )

    def alerts(self) -> list[AlertRule]:
        """Every alert rule, by name. ``target``/``options`` may hold secrets (an SMTP
        password): show :func:`norc.alerts.manage.describe` to people instead."""
        from norc.alerts.rules import load_rules

        return load_rules(self.db)

    def remove_alert(self, name: str) -> None:
        """Delete a rule and its unsent notifications (its history stays)."""
        from norc.alerts.rules import delete_rule

        delete_rule(self.db, name)
        self.alert_rules.invalidate()

    def test_alert(self, name: str) -> NotificationRecord:
        """Send a test notification through rule ``name`` now, from this process; raises
        :class:`norc.alerts.channels.AlertError` naming the error if it failed."""
        from norc.alerts.delivery import send_test

        return send_test(self, name)

    def alert_history(
        self, *, rule: str | None = None, limit: int = 100
    ) -> list[NotificationRecord]:
        """Notifications, newest first: pending, sent, failed or suppressed, with attempts."""
        from norc.alerts.delivery import history

        return history(self, rule=rule, limit=limit)

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close queues, finish log uploads and release database connections."""
        self.alert_sender.stop()
        for q in self._queues.values():
            q.close()
        if self._uploads is not None:
            self._uploads.shutdown(wait=True)
        self.db.dispose()

    def __enter__(self) -> Norc:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _task_ref(task: Task | str | int) -> str | int:
    """The name or id a task is looked up by; a Task object must have been saved."""
    if isinstance(task, Task):
        if task.id is None:
            raise UnknownTask(f"{task.name} (not saved: call save_task first)")
        return task.id
    return task


def _schedule_timing(
    cron: str | None,
    every: float | timedelta | None,
    start: datetime | float | timedelta | None,
    tz: str,
) -> dict[str, Any]:
    """The kind/spec/start_at/period columns for a cron spec or a period."""
    from norc.schedules.cron import parse_cron, resolve_timezone

    zone = resolve_timezone(tz)
    if (cron is None) == (every is None and start is None):
        raise InvalidSpec("give either cron=SPEC or every=SECONDS (with an optional start)")
    if cron is not None:
        return {
            "kind": "cron",
            "spec": parse_cron(cron).canonical,
            "start_at": None,
            "period": None,
        }
    period = None if every is None else check_period(every)
    now = utcnow()
    if start is None:
        assert period is not None
        start_at = now + timedelta(seconds=period)
    elif isinstance(start, datetime):
        start_at = start if start.tzinfo else start.replace(tzinfo=zone)
    else:
        start_at = now + timedelta(seconds=check_delay(start))
    try:
        start_utc = start_at.astimezone(ZoneInfo("UTC"))
    except OverflowError:
        raise InvalidSpec(f"start {start_at.isoformat()} is out of range in UTC") from None
    return {"kind": "simple", "spec": "", "start_at": start_utc, "period": period}


def _first_fire(timing: Timing) -> datetime | None:
    # A fire at exactly "now" (a start of now) still counts as the first one.
    return timing.next_after(utcnow() - timedelta(microseconds=1))
