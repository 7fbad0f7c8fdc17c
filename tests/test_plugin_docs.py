"""docs/plugins.md shows the worked example's real code: each block marked as taken from
a file of docs/example_plugin/ is in that file, word for word, so the page cannot rot
(the example itself is tested by docs/example_plugin/tests/)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
BLOCK = re.compile(r"<!-- from (\S+) -->\n```\w*\n(.*?)```", re.DOTALL)


def test_every_example_block_is_the_example_code() -> None:
    """Each ``<!-- from PATH -->`` block of docs/plugins.md occurs verbatim in PATH."""
    page = (ROOT / "docs" / "plugins.md").read_text()
    blocks = BLOCK.findall(page)
    assert len(blocks) >= 8, "the page lost its worked example"
    for path, code in blocks:
        assert path.startswith("docs/example_plugin/"), path
        assert code in (ROOT / path).read_text(), f"docs/plugins.md differs from {path}"


def test_the_page_names_each_hook() -> None:
    """Every hook of norc/hookspecs.py is described on the page."""
    page = (ROOT / "docs" / "plugins.md").read_text()
    specs = (ROOT / "norc" / "hookspecs.py").read_text()
    hooks = re.findall(r"^def (norc_\w+)\(", specs, re.MULTILINE)
    assert hooks
    for hook in hooks:
        assert f"`{hook}(" in page, hook
