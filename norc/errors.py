"""Every error Norc raises on purpose.

All of them derive from :class:`NorcError`, so ``except norc.NorcError`` catches
everything Norc reports about bad input or a failed dependency. Where a builtin
fits, the subclass inherits it too (an unknown name is a ``LookupError``, an
invalid value a ``ValueError``), so generic code keeps working. Each message is
built from the offending value, so it names what failed.
"""

from __future__ import annotations


class NorcError(Exception):
    """Root of every error Norc raises on purpose."""


class ConfigurationError(NorcError, ValueError):
    """A setting (environment variable, TOML key or argument) is invalid."""


class DatabaseError(NorcError):
    """The database could not be reached or used."""


class DatabaseUnreachable(DatabaseError, ConnectionError):
    """The database URL points at a server that does not answer."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(f"cannot reach database {url}: {reason}")


class SchemaOutdated(DatabaseError):
    """The database holds an older Norc schema; ``norc db upgrade`` migrates it."""

    def __init__(self, url: str, current: str | None, head: str) -> None:
        super().__init__(
            f"database {url} has Norc schema revision {current!r}, this Norc needs {head!r}:"
            " run `norc db upgrade`"
        )


class SchemaNewer(DatabaseError):
    """The database holds a schema revision this Norc does not know: a newer Norc
    migrated it, and an older one cannot migrate back."""

    def __init__(self, url: str, current: str, head: str) -> None:
        super().__init__(
            f"database {url} has Norc schema revision {current!r}, which this Norc does not"
            f" know (it needs {head!r}): a newer Norc migrated it; install that version"
        )


class PluginError(NorcError):
    """A plugin could not be loaded or registered."""


class PluginLoadError(PluginError, ImportError):
    """A plugin named by an entry point failed to import."""

    def __init__(self, name: str, distribution: str, reason: str) -> None:
        self.plugin = name
        super().__init__(f"plugin {name!r} (from {distribution}) failed to load: {reason}")


class DuplicateRegistration(PluginError, ValueError):
    """Two plugins (or a plugin and the application) registered the same name."""

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        super().__init__(f"{kind} {name!r} is registered twice: by {first} and by {second}")


class UnknownName(NorcError, LookupError):
    """Base for lookups by name that found nothing."""


class UnknownTaskType(UnknownName):
    """No installed plugin provides this task type."""

    def __init__(self, type_name: str, hint: str = "") -> None:
        self.type_name = type_name
        msg = f"unknown task type {type_name!r}"
        super().__init__(f"{msg}: {hint}" if hint else msg)


class UnknownQueueType(UnknownName):
    """No installed plugin provides this queue type."""

    def __init__(self, type_name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown queue type {type_name!r} (installed: {', '.join(sorted(known)) or 'none'})"
        )


class UnknownLogStore(UnknownName):
    """No installed plugin provides this log store."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown log store {name!r} (installed: {', '.join(sorted(known)) or 'none'})"
        )


class UnknownChannel(UnknownName):
    """No installed plugin provides this alert channel."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown alert channel {name!r} (installed: {', '.join(sorted(known)) or 'none'})"
        )


class UnknownQueue(UnknownName):
    """No queue of this name exists in the database."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown queue {name!r}: create it first (`norc queue create {name}`)")


class UnknownTask(UnknownName):
    """No task of this name (or id) exists in the database."""

    def __init__(self, ref: object) -> None:
        super().__init__(f"unknown task {ref!r}")


class UnknownInstance(UnknownName):
    """No instance of this id exists in the database."""

    def __init__(self, ref: object) -> None:
        super().__init__(f"unknown instance {ref!r}")


class UnknownDaemon(UnknownName):
    """No executor or scheduler of this id exists in the database."""

    def __init__(self, kind: str, ref: object) -> None:
        super().__init__(f"unknown {kind} {ref!r}")


class DaemonSettled(NorcError):
    """This daemon's row was ended by another daemon (it had stopped beating: a stall, a
    network partition), which settled its work: it must not carry on under that row."""

    def __init__(self, daemon_id: int, status: str, reason: str | None) -> None:
        self.daemon_id = daemon_id
        super().__init__(
            f"daemon {daemon_id} was settled as {status} by another daemon"
            + (f" ({reason})" if reason else "")
        )


class DuplicateName(NorcError, ValueError):
    """A task or queue of this name already exists."""

    def __init__(self, kind: str, name: str) -> None:
        self.name = name
        super().__init__(f"a {kind} named {name!r} already exists")


class InvalidTaskParams(NorcError, ValueError):
    """A task's parameters do not fit its type."""

    def __init__(self, type_name: str, reason: str) -> None:
        super().__init__(f"invalid parameters for task type {type_name!r}: {reason}")


class InvalidName(NorcError, ValueError):
    """A name (of a task, queue, ...) is empty, too long or has control characters."""

    def __init__(self, kind: str, name: object, reason: str) -> None:
        super().__init__(f"invalid {kind} name {name!r}: {reason}")


class InvalidSpec(NorcError, ValueError):
    """A schedule specification (cron string, seed encoding, period) is invalid."""


class LogNotFound(NorcError, LookupError):
    """An instance's log is neither on local disk nor in the remote log store."""


class InvalidLogKey(NorcError, ValueError):
    """A log key that could address something outside a log store (see ``logs.check_key``)."""


class QueueGroupPush(NorcError, ValueError):
    """Instances go to a queue, never to a queue group."""

    def __init__(self, name: str, members: list[str]) -> None:
        super().__init__(
            f"{name!r} is a queue group: enqueue onto one of its queues ({', '.join(members)})"
        )
