"""Norc's web interface: a page that watches and steers Norc, and the JSON API it uses.

``norc web`` calls :func:`serve`; an existing ASGI service mounts :func:`create_app`.
See ``docs/web.md`` for the pages, the API and the safety model.
"""

from __future__ import annotations

from norc.web.server import create_app, serve

__all__ = ["create_app", "serve"]
