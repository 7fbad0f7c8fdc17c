"""The queue seam: queues reach Norc's store only through ``norc.store.seam``.

mypy holds the queue modules to it through the type of ``db``; these tests check the
same at run time (the store has every member the seam promises) and in the source (no
queue module imports another part of the store or uses a member of ``db`` the seam
does not list), so a change that widens what queues use must widen the seam, and its
documentation, on purpose.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import ModuleType

import norc_example.spool
import pytest

import norc.plugins.dbqueue
import norc_sqs
from norc.store.database import Database
from norc.store.seam import QueueStore, SQLQueueStore

#: Each queue module, with the seam tier its queue class uses.
QUEUE_MODULES: list[tuple[ModuleType, type]] = [
    (norc.plugins.dbqueue, SQLQueueStore),
    (norc_sqs, QueueStore),
    (norc_example.spool, QueueStore),  # docs/plugins.md's worked example
]


def protocol_members(protocol: type) -> set[str]:
    """The public members a Protocol declares, its bases' included."""
    return {
        name
        for klass in protocol.__mro__
        if getattr(klass, "_is_protocol", False) and klass is not object
        for name in vars(klass)
        if not name.startswith("_")
    }


def test_the_seam_lists_what_the_queues_need_and_nothing_else() -> None:
    """The two tiers are the members named in docs/plugins.md, the SQL tier a superset."""
    assert protocol_members(QueueStore) == {
        "wakeups",
        "transaction",
        "mark_running",
        "still_queued",
        "instances_by_id",
    }
    assert protocol_members(SQLQueueStore) - protocol_members(QueueStore) == {
        "dialect",
        "url",
        "engine",
        "reading",
        "connection_errors",
        "autocommit_connection",
        "driver_autocommit",
        "driver_errors",
        "for_ids",
        "prefetch_claimed",
        "prefetch_started",
    }
    docs = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text()
    for name in protocol_members(SQLQueueStore):
        assert f"`{name}" in docs, f"docs/plugins.md does not document the seam's {name}"


def test_the_database_has_every_member_of_the_seam(sqlite_url: str) -> None:
    """What queues are given (a Database) is an SQLQueueStore, so a QueueStore too."""
    db = Database(sqlite_url)
    try:
        assert isinstance(db, SQLQueueStore)
        for name in protocol_members(SQLQueueStore):
            member = getattr(db, name)
            declared = getattr(SQLQueueStore, name)
            if callable(declared):
                # Every parameter the seam names exists on the store, same kind.
                have = inspect.signature(member).parameters
                for param in list(inspect.signature(declared).parameters.values())[1:]:
                    assert param.name in have, f"Database.{name} lacks {param.name}"
                    assert have[param.name].kind == param.kind, f"Database.{name}({param.name})"
    finally:
        db.dispose()


def _store_imports(tree: ast.Module) -> list[str]:
    """The modules of ``norc.store`` a module's source imports, anywhere in it."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [n for n in names if n == "norc.store" or n.startswith("norc.store.")]
    return found


def _db_uses(tree: ast.Module) -> list[tuple[int, str | None]]:
    """Each use of ``self.db`` in a module: (line, the attribute taken from it, or None
    when ``self.db`` itself is passed on or stored, which would leak all of it)."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    uses = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "db"
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        ):
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute):
                uses.append((node.lineno, parent.attr))
            else:
                uses.append((node.lineno, None))
    return uses


@pytest.mark.parametrize(
    ("module", "tier"), QUEUE_MODULES, ids=[m.__name__ for m, _ in QUEUE_MODULES]
)
def test_queue_modules_reach_the_store_only_through_the_seam(
    module: ModuleType, tier: type
) -> None:
    """A queue module imports only norc.store.seam of the store, and takes from ``self.db``
    only members of its seam tier."""
    tree = ast.parse(Path(inspect.getfile(module)).read_text())
    imports = _store_imports(tree)
    assert [n for n in imports if not n.startswith("norc.store.seam")] == []
    allowed = protocol_members(tier)
    outside = [(line, attr) for line, attr in _db_uses(tree) if attr not in allowed]
    assert outside == [], f"{module.__name__} reaches past the {tier.__name__} seam"
    assert _db_uses(tree), "the check found no use of self.db at all: is it still looking?"


def test_the_check_catches_a_queue_reaching_past_the_seam() -> None:
    """The source check is not vacuous: a store import or an unlisted member is found."""
    tree = ast.parse(
        "from norc.store.database import Database\n"
        "class Q:\n"
        "    def f(self):\n"
        "        self.db.finish_instances(None, [])\n"
        "        helper(self.db)\n"
    )
    assert _store_imports(tree) == ["norc.store.database", "norc.store.database.Database"]
    assert sorted(_db_uses(tree), key=str) == [(4, "finish_instances"), (5, None)]
