"""A task type: ``Greet`` writes a greeting to its instance's log."""

from __future__ import annotations

import attrs

from norc.abc import RunContext, Task


@attrs.define(kw_only=True)
class Greet(Task):
    """Say hello to ``who``; fails (returns False) when there is nobody to greet.

    Its fields are its parameters, stored as JSON with the task and checked against
    their type hints when the task is saved and when it is loaded to run.
    """

    who: str
    greeting: str = "hello"

    def run(self, ctx: RunContext) -> bool:
        """Write the greeting to the log; an empty ``who`` is a FAILURE, with its reason."""
        if not self.who.strip():
            ctx.error = "nobody to greet"
            return False
        ctx.log_file.write(f"{self.greeting}, {self.who}!\n".encode())
        ctx.log.info("greeted", who=self.who)
        return True
