"""The public API of a Norc handle: databases, tasks, queues, errors."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

import norc
from norc.errors import (
    ConfigurationError,
    DatabaseUnreachable,
    DuplicateName,
    InvalidName,
    InvalidTaskParams,
    NorcError,
    UnknownQueue,
    UnknownQueueType,
    UnknownTask,
)
from tests.tasks import Echo, Outcome


def test_schema_is_created_on_first_use(tmp_path: Path) -> None:
    """A brand-new SQLite file works at once: no set-up step."""
    app = norc.Norc(f"sqlite:///{tmp_path / 'fresh.db'}", log_dir=tmp_path / "logs")
    app.save_task(Echo(name="e"))
    assert [t.name for t in app.tasks()] == ["e"]
    app.close()


def test_default_database_is_a_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a URL or NORC_DATABASE_URL, Norc uses ./norc.db."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NORC_DATABASE_URL", raising=False)
    app = norc.Norc()
    app.save_task(Echo(name="e"))
    app.close()
    assert (tmp_path / "norc.db").exists()


def test_environment_names_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NORC_DATABASE_URL is used when no URL is passed; an explicit argument wins."""
    monkeypatch.setenv("NORC_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert norc.Norc().settings.database_url.endswith("env.db")
    assert norc.Norc("sqlite:///other.db").settings.database_url == "sqlite:///other.db"


def test_two_handles_on_two_databases_side_by_side(tmp_path: Path) -> None:
    """No global state: each handle sees only its own database."""
    a = norc.Norc(f"sqlite:///{tmp_path / 'a.db'}", log_dir=tmp_path / "la")
    b = norc.Norc(f"sqlite:///{tmp_path / 'b.db'}", log_dir=tmp_path / "lb")
    a.save_task(Echo(name="only-in-a"))
    b.save_task(Outcome(name="only-in-b"))
    assert [t.name for t in a.tasks()] == ["only-in-a"]
    assert [t.name for t in b.tasks()] == ["only-in-b"]
    a.close()
    b.close()


def test_task_round_trips_with_typed_params(app: norc.Norc) -> None:
    """A saved task loads back as an equal object of its class, params and settings included."""
    saved = app.save_task(Echo(name="greet", message="hi", timeout=5, description="says hi"))
    assert saved.id is not None
    loaded = app.task("greet")
    assert loaded == saved
    assert isinstance(loaded, Echo)
    record = app.task_record("greet")
    assert record.params == {"message": "hi"}
    assert record.type == "Echo"
    assert record.plugin == "application"


def test_duplicate_task_name_is_refused(app: norc.Norc) -> None:
    """Saving a second task under a taken name raises DuplicateName; replace=True overwrites."""
    app.save_task(Echo(name="dup"))
    with pytest.raises(DuplicateName, match="'dup'"):
        app.save_task(Echo(name="dup", message="other"))
    app.save_task(Echo(name="dup", message="other"), replace=True)
    assert app.task_record("dup").params == {"message": "other"}


def test_invalid_params_name_the_parameter() -> None:
    """A param of the wrong type, an unknown one or a missing one is InvalidTaskParams."""
    with pytest.raises(InvalidTaskParams, match="'message'"):
        Echo.from_params(name="x", params={"message": 3})
    with pytest.raises(InvalidTaskParams, match="unknown parameter"):
        Echo.from_params(name="x", params={"nope": 1})
    with pytest.raises(InvalidTaskParams, match="'result'"):
        Outcome.from_params(name="x", params={"result": "yes"})
    with pytest.raises(InvalidTaskParams, match="timeout"):
        Echo(name="x", timeout=-1)


def test_task_subclass_without_attrs_is_refused(app: norc.Norc) -> None:
    """Forgetting @attrs.define is a clear error, not a silent loss of params."""

    class Plain(norc.Task):
        def run(self, ctx: norc.RunContext) -> None:
            pass

    with pytest.raises(InvalidTaskParams, match="attrs.define"):
        app.save_task(Plain(name="plain"))


def test_task_missing_run_fails_when_instantiated() -> None:
    """An ABC: a Task subclass without run() cannot be created at all."""

    @attrs.define(kw_only=True)
    class NoRun(norc.Task):
        pass

    with pytest.raises(TypeError, match="run"):
        NoRun(name="x")  # type: ignore[abstract]


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "tab\there", "x" * 201])
def test_hostile_task_names_are_refused(name: str) -> None:
    """Empty, over-long and control-character names are InvalidName."""
    with pytest.raises(InvalidName):
        Echo(name=name)


def test_unknown_queue_is_a_clear_error(app: norc.Norc) -> None:
    """Enqueueing onto a queue that does not exist names it."""
    app.save_task(Echo(name="e"))
    with pytest.raises(UnknownQueue, match="'nowhere'"):
        app.enqueue("e", queue="nowhere")


def test_unknown_queue_type_lists_installed_ones(app: norc.Norc) -> None:
    """Creating a queue of a type no plugin provides names the type and what exists."""
    with pytest.raises(UnknownQueueType, match="'rabbit'.*dbqueue"):
        app.create_queue("q", type="rabbit")


def test_duplicate_queue_is_refused(app: norc.Norc) -> None:
    """Queue names are unique."""
    app.create_queue("q1")
    with pytest.raises(DuplicateName):
        app.create_queue("q1")


def test_unknown_task_is_a_lookup_error(app: norc.Norc) -> None:
    """Asking for a missing task raises UnknownTask, also a LookupError."""
    with pytest.raises(UnknownTask):
        app.enqueue("ghost")
    with pytest.raises(LookupError):
        app.task("ghost")


def test_a_task_object_is_enqueued_once_saved(app: norc.Norc) -> None:
    """enqueue takes a Task object: one never saved raises UnknownTask naming it, a saved
    one is enqueued as its task."""
    unsaved = Echo(name="echo", message="hi")
    with pytest.raises(UnknownTask, match="echo .not saved"):
        app.enqueue(unsaved)
    saved = app.save_task(Echo(name="echo", message="hi"))
    assert app.instance(app.enqueue(saved)).task_name == "echo"
    assert app.db.count_by_status() == {"QUEUED": 1}


def test_unreachable_database_is_named(tmp_path: Path) -> None:
    """A server that does not answer raises DatabaseUnreachable with the URL, no password."""
    app = norc.Norc("postgresql://user:secret@127.0.0.1:1/db", log_dir=tmp_path)
    with pytest.raises(DatabaseUnreachable, match="127.0.0.1:1") as info:
        app.tasks()
    assert "secret" not in str(info.value)


def test_bad_url_and_settings_are_configuration_errors(tmp_path: Path) -> None:
    """A malformed URL or setting is a ConfigurationError (a NorcError and ValueError)."""
    with pytest.raises(ConfigurationError):
        norc.Norc("not a url at all", log_dir=tmp_path)
    with pytest.raises(NorcError):
        norc.Norc(
            f"sqlite:///{tmp_path}/x.db", settings=None, log_store=None, disable_plugins=None
        ).settings.__class__.load(heartbeat_interval="soon")


def test_enqueue_many_creates_queued_instances(app: norc.Norc) -> None:
    """enqueue_many makes that many QUEUED instances, in order, all visible in the queue."""
    app.save_task(Echo(name="e"))
    ids = app.enqueue_many("e", 25)
    assert ids == sorted(ids) and len(set(ids)) == 25
    assert app.db.count_by_status(ids) == {"QUEUED": 25}
    assert app.queue("default").count() == 25


def test_settings_never_show_a_database_password() -> None:
    """A URL's password stays out of the settings' repr (logs, tracebacks, bug reports)."""
    from norc.config import Settings

    shown = repr(Settings(database_url="postgresql://norc:s3cret@db.example/norc"))
    assert "s3cret" not in shown
    assert "postgresql://norc:***@db.example/norc" in shown
