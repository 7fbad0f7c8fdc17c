"""The fixtures the contract suites need, as a plugin's own test suite writes them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import norc_example
import pytest

import norc


@pytest.fixture
def app(tmp_path: Path) -> Iterator[norc.Norc]:
    """A Norc handle on an empty SQLite database, with this plugin loaded in-process
    (installed, its entry point would load it without ``plugins=``)."""
    with norc.Norc(
        f"sqlite:///{tmp_path / 'norc.db'}", log_dir=tmp_path / "logs", plugins=[norc_example]
    ) as handle:
        yield handle
