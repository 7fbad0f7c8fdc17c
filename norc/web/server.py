"""The ASGI app (page, static files, API) and ``serve()``, which runs it with uvicorn."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from norc.errors import ConfigurationError
from norc.web.api import error_response, log_crash, routes
from norc.web.openapi import openapi_document
from norc.web.security import Guard, is_loopback

if TYPE_CHECKING:
    from norc.app import Norc

STATIC = Path(__file__).parent / "static"

#: Sent with every response: only this server's own scripts, styles and data, no framing.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
        " frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class CatchCrashes:
    """ASGI middleware answering an unexpected failure with a bare JSON 500.

    It logs the failure itself (:func:`norc.web.api.log_crash`: no frame locals, secrets
    scrubbed) and does not re-raise, so the server does not print the traceback again.
    """

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:  # noqa: BLE001 (logged by log_crash)
            log_crash(self.guard, Request(scope), exc)
            if not started:
                response = error_response(500, "internal error (details are in the server's log)")
                await response(scope, receive, send)


def create_app(
    app: Norc,
    *,
    read_only: bool = False,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
    require_auth: bool = False,
    allowed_hosts: Iterable[str] = (),
) -> Starlette:
    """The web page and JSON API for ``app``, as an ASGI app an existing service can mount.

    Without credentials it serves local access only (a loopback client using a loopback
    host name). With a ``token`` or ``user``/``password``, changes need them, and with
    ``require_auth`` reads do too. ``read_only`` refuses every change. The CSRF token
    and changes are served only to requests whose ``Host`` is a loopback name, an IP
    address, or one of ``allowed_hosts`` (``"*"``: any). Raises
    :class:`norc.errors.ConfigurationError` for an incomplete configuration.
    """
    guard = Guard(
        read_only=read_only,
        token=token,
        user=user,
        password=password,
        require_auth=require_auth,
        allowed_hosts=frozenset(allowed_hosts),
    )
    document = openapi_document()

    async def index(_request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def openapi(_request: Request) -> Response:
        return JSONResponse(document)  # public: it describes the API, it holds no data

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/api/") or request.url.path == "/api":
            return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))
        return Response(str(exc.detail), status_code=exc.status_code, headers=exc.headers)

    web = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/api/openapi.json", openapi, methods=["GET"]),
            *routes(app, guard),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={HTTPException: http_error},
        middleware=[Middleware(SecurityHeaders), Middleware(CatchCrashes, guard=guard)],
    )
    web.state.guard = guard
    return web


def served_hosts(host: str, allowed_hosts: Iterable[str] | None = None) -> set[str]:
    """The ``Host`` names :func:`serve` answers to besides loopback names and addresses."""
    if allowed_hosts is None:
        allowed_hosts = os.environ.get("NORC_WEB_ALLOWED_HOSTS", "").split(",")
    names = {h.strip() for h in allowed_hosts if h.strip()}
    if host.strip("[]") in ("", "0.0.0.0", "::"):
        names |= {socket.gethostname(), socket.getfqdn()}
    else:
        names.add(host)
    return names


def serve(
    app: Norc,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    read_only: bool = False,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
) -> None:
    """Serve the web page and API with uvicorn until interrupted (``norc web``).

    On a loopback address anonymous local users may read and steer; beyond loopback
    every API call needs the token or user/password, and without either this refuses to
    start with :class:`norc.errors.ConfigurationError`. Besides loopback names and IP
    addresses, the page is served to the ``Host`` names in ``allowed_hosts`` (default:
    ``$NORC_WEB_ALLOWED_HOSTS``, comma-separated), ``host`` itself when it is a name,
    and this machine's host names when ``host`` is a wildcard (``0.0.0.0``, ``::``).
    """
    import uvicorn

    local = is_loopback(host)
    if not local and token is None and user is None:
        raise ConfigurationError(
            f"refusing to serve on {host or 'all interfaces'} without authentication:"
            " set --token/NORC_WEB_TOKEN or --user and --password, or listen on 127.0.0.1"
        )
    asgi = create_app(
        app,
        read_only=read_only,
        token=token,
        user=user,
        password=password,
        require_auth=not local,
        allowed_hosts=served_hosts(host, allowed_hosts),
    )
    uvicorn.run(asgi, host=host, port=port, log_level="info")
