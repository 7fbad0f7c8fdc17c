"""Schedulers: turn schedules into instances, any number of them sharing one database.

The public class is :class:`norc.scheduler.scheduler.Scheduler` (also returned by
``Norc.scheduler()``).
"""
