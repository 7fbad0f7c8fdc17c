"""Norc: a cron replacement you can see, steer and scale.

``import norc`` then open a handle on a database with :class:`norc.Norc`. Nothing is
loaded or connected at import time.
"""

from __future__ import annotations

from norc.abc import LogStore, Queue, QueueItem, RunContext, Task
from norc.app import Norc
from norc.errors import NorcError
from norc.pluginmarkers import hookimpl
from norc.records import InstanceRecord
from norc.status import DaemonStatus, InstanceStatus

__all__ = [
    "DaemonStatus",
    "InstanceRecord",
    "InstanceStatus",
    "LogStore",
    "Norc",
    "NorcError",
    "Queue",
    "QueueItem",
    "RunContext",
    "Task",
    "hookimpl",
]
