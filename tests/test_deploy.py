"""The container files at the repository's root stay true to the code: compose.yaml's
commands are valid norc command lines, its stop grace outlasts the graceful stop, and
the Dockerfile copies what exists. (No Docker runs here: see docs/deploy.md.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from norc.daemon import DEFAULT_STOP_TIMEOUT
from norc.service import STOP_MARGIN

ROOT = Path(__file__).resolve().parent.parent
NORC = str(Path(sys.executable).with_name("norc"))


def _compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")  # PyYAML comes with moto[server], a test extra
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)s", text)
    assert match, f"stop_grace_period {text!r} is not whole seconds"
    return float(match[1])


def test_compose_daemons_are_valid_command_lines() -> None:
    """Each daemon's command parses with norc's own options (checked through `norc
    service unit`, which takes the same options and validates every value)."""
    services = _compose()["services"]
    daemons = {name: s for name, s in services.items() if s.get("image") == "norc:local"}
    assert {"migrate", "scheduler", "executor", "web"} <= set(daemons)
    for name, service in daemons.items():
        command = service["command"]
        if command[0] == "db":
            args = [NORC, *command, "--help"]
        else:
            args = [NORC, "service", "unit", *command]
        result = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (name, result.stderr)


def test_compose_gives_the_graceful_stop_its_time() -> None:
    """Docker's stop grace is longer than the executor's --stop-timeout plus the margin
    finally_ needs, and tini forwards the signal (init)."""
    services = _compose()["services"]
    for name in ("scheduler", "executor"):
        service = services[name]
        command = service["command"]
        stop_timeout = (
            float(command[command.index("--stop-timeout") + 1])
            if "--stop-timeout" in command
            else DEFAULT_STOP_TIMEOUT
        )
        assert _seconds(service["stop_grace_period"]) >= stop_timeout + STOP_MARGIN, name
        assert service["init"] is True and service["restart"] == "on-failure"


def test_dockerfile_copies_what_exists() -> None:
    """Every path the Dockerfile copies is in the repository."""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), source
