"""``norc demo``: a CommandTask and a custom Python task, run by an embedded executor.

It doubles as the smallest complete example of using Norc from application code.
"""

from __future__ import annotations

import time

import attrs

from norc.abc import RunContext, Task
from norc.app import Norc
from norc.errors import NorcError
from norc.records import InstanceRecord


@attrs.define(kw_only=True)
class CountPrimes(Task):
    """A custom task: counts the primes below ``limit`` and prints the result."""

    type_name = "norc.demo.CountPrimes"

    limit: int = 10_000

    def run(self, ctx: RunContext) -> bool:
        """Sieve, print, succeed."""
        sieve = bytearray([1]) * self.limit
        sieve[:2] = b"\x00\x00"
        for i in range(2, int(self.limit**0.5) + 1):
            if sieve[i]:
                sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
        count = sum(sieve)
        print(f"{count} primes below {self.limit}")
        ctx.log.info("counted primes", limit=self.limit, count=count)
        return True

    def revision(self) -> str:
        """The demo's version, recorded on each instance."""
        return "demo-1"


def run_demo(app: Norc, *, timeout: float = 60.0) -> list[InstanceRecord]:
    """Save the demo tasks, run them with an embedded executor; return the instances."""
    command_cls = app.registry.task_type("CommandTask")
    if command_cls is None:
        raise NorcError(
            "the demo needs the CommandTask type: pip install ./norc_command (norc-command)"
        )
    echo = command_cls.from_params(
        name="demo-echo",
        params={"command": "echo 'Hello from Norc at $UTC{YYYY-MM-DD hh:mm:ss} UTC'"},
        description="A shell command with the seed's date substitution",
        timeout=30,
    )
    app.save_task(echo, replace=True)
    app.save_task(
        CountPrimes(
            name="demo-primes", limit=200_000, description="A custom Python task", timeout=30
        ),
        replace=True,
    )
    ids = [app.enqueue("demo-echo"), app.enqueue("demo-primes"), app.enqueue("demo-echo")]
    deadline = time.monotonic() + timeout
    with app.executor(queue="default", concurrency=2):
        while True:
            records = app.db.instances_by_id(ids)
            if all(r.status.is_final for r in records):
                break
            if time.monotonic() > deadline:
                raise NorcError(f"demo instances did not finish within {timeout:g} s")
            time.sleep(0.05)
    return records
