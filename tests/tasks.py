"""Task classes the tests run; a module of their own so worker processes can import them."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import attrs

from norc import RunContext, Task


@attrs.define(kw_only=True)
class Echo(Task):
    """Prints its message to stdout and stderr and succeeds."""

    message: str = "hello"

    def run(self, ctx: RunContext) -> None:
        print(f"out: {self.message}")
        print(f"err: {self.message}", file=sys.stderr)
        ctx.log.info("echoed", message=self.message)


@attrs.define(kw_only=True)
class Outcome(Task):
    """Returns the configured value, or raises when ``raise_`` is set."""

    result: bool | None = True
    raise_: str | None = None

    def run(self, ctx: RunContext) -> bool | None:
        if self.raise_:
            raise RuntimeError(self.raise_)
        return self.result

    def revision(self) -> str:
        return "rev-42"


@attrs.define(kw_only=True)
class Hang(Task):
    """Spins forever in Python (or sleeps in a child process); records its pid and finally_."""

    marker_dir: str
    child: bool = False

    def run(self, ctx: RunContext) -> None:
        Path(self.marker_dir, f"pid-{ctx.instance_id}").write_text(str(os.getpid()))
        if self.child:
            import subprocess

            proc = subprocess.Popen(["sleep", "1000"])
            Path(self.marker_dir, f"child-{ctx.instance_id}").write_text(str(proc.pid))
        while True:
            pass

    def finally_(self, ctx: RunContext) -> None:
        Path(self.marker_dir, f"finally-{ctx.instance_id}").write_text("ran")


@attrs.define(kw_only=True)
class SlowFinally(Task):
    """Succeeds, then hangs in finally_ (which Norc must bound)."""

    def run(self, ctx: RunContext) -> bool:
        return True

    def finally_(self, ctx: RunContext) -> None:
        time.sleep(1000)


@attrs.define(kw_only=True)
class Noisy(Task):
    """Writes ``megabytes`` MB of text and some binary garbage to stdout."""

    megabytes: int = 5

    def run(self, ctx: RunContext) -> None:
        line = b"x" * 1023 + b"\n"
        out = sys.stdout.buffer
        for _ in range(self.megabytes * 1024):
            out.write(line)
        out.write(bytes(range(256)) * 4)
        out.flush()


@attrs.define(kw_only=True)
class Sleep(Task):
    """Sleeps ``seconds``; records that it finished."""

    seconds: float = 1.0

    def run(self, ctx: RunContext) -> None:
        time.sleep(self.seconds)


@attrs.define(kw_only=True)
class FlakyOnce(Task):
    """Fails its first ``failures`` attempts (counted in a file), then succeeds."""

    counter: str
    failures: int = 1

    def run(self, ctx: RunContext) -> bool:
        path = Path(self.counter)
        seen = int(path.read_text()) if path.exists() else 0
        path.write_text(str(seen + 1))
        return seen >= self.failures


@attrs.define(kw_only=True)
class Holdable(Task):
    """Returns at once, unless the file ``hold`` is there: the first run to find it removes
    it, then sleeps ``seconds`` (or exits the worker with ``exit_code``)."""

    hold: str
    seconds: float = 60.0
    exit_code: int | None = None

    def run(self, ctx: RunContext) -> None:
        try:
            Path(self.hold).unlink()
        except FileNotFoundError:
            return
        if self.exit_code is not None:
            os._exit(self.exit_code)
        time.sleep(self.seconds)


@attrs.define(kw_only=True)
class PolicyProbe(Holdable):
    """Prints the CPU scheduling policy it runs under (``policy=N``), then as Holdable."""

    def run(self, ctx: RunContext) -> None:
        print(f"policy={os.sched_getscheduler(0)}")
        super().run(ctx)
