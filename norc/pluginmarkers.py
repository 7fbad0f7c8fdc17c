"""The pluggy marker plugins decorate their hooks with (re-exported as ``norc.hookimpl``).

Kept in its own tiny module so plugins can import it without importing all of Norc.
"""

from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("norc")
