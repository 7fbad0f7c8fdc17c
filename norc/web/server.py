"""The ASGI app (page, static files, API) and ``serve()``, which runs it with uvicorn."""

from __future__ import annotations

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
from norc.web.api import error_response, routes
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


def create_app(
    app: Norc,
    *,
    read_only: bool = False,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
    require_auth: bool = False,
) -> Starlette:
    """The web page and JSON API for ``app``, as an ASGI app an existing service can mount.

    Without credentials it serves local access only (a loopback client using a loopback
    host name). With a ``token`` or ``user``/``password``, changes need them, and with
    ``require_auth`` reads do too. ``read_only`` refuses every change. Raises
    :class:`norc.errors.ConfigurationError` for an incomplete configuration.
    """
    guard = Guard(
        read_only=read_only, token=token, user=user, password=password, require_auth=require_auth
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

    async def crash(request: Request, exc: Exception) -> Response:
        return error_response(500, "internal error (details are in the server's log)")

    web = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/api/openapi.json", openapi, methods=["GET"]),
            *routes(app, guard),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={HTTPException: http_error, Exception: crash},
        middleware=[Middleware(SecurityHeaders)],
    )
    web.state.guard = guard
    return web


def serve(
    app: Norc,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    read_only: bool = False,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
) -> None:
    """Serve the web page and API with uvicorn until interrupted (``norc web``).

    On a loopback address anonymous local users may read and steer; beyond loopback
    every API call needs the token or user/password, and without either this refuses to
    start with :class:`norc.errors.ConfigurationError`.
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
    )
    uvicorn.run(asgi, host=host, port=port, log_level="info")
