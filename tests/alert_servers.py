"""Real servers the alert tests deliver to: SMTP (aiosmtpd) and HTTP (http.server)."""

from __future__ import annotations

import email
import email.policy
import json
import ssl
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from norc.testing import free_port


class Mailbox:
    """An SMTP server on 127.0.0.1 keeping every message it receives.

    With ``users``, it offers AUTH (without TLS: a local test) and accepts those
    user/password pairs only. :meth:`stop` and :meth:`start` take it down and up on
    the same port.
    """

    def __init__(
        self,
        port: int | None = None,
        users: dict[str, str] | None = None,
        *,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.port = port or free_port()
        self.users = users
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.messages: list[EmailMessage] = []
        self.logins: list[str] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 OK"

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert self.users is not None
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if self.users.get(user) == password:
                self.logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    @property
    def url(self) -> str:
        """An smtp:// URL reaching it."""
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> Mailbox:
        """Listen (again)."""
        kwargs: dict[str, Any] = {}
        if self.users is not None:
            kwargs = {"authenticator": self._authenticate, "auth_require_tls": False}
        if self.starttls is not None:  # clients must upgrade before they send
            kwargs.update(tls_context=self.starttls, require_starttls=True)
        if self.implicit_tls is not None:
            kwargs.update(ssl_context=self.implicit_tls)
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def bodies(self) -> list[str]:
        """The text of every message received."""
        with self._lock:
            return [str(m.get_content()) for m in self.messages]


class Hooks:
    """An HTTP server on 127.0.0.1 keeping every JSON body POSTed to it; ``fail`` is
    the number of requests to answer with 500 first."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.fail = fail
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with hooks._lock:
                    if hooks.fail > 0:
                        hooks.fail -= 1
                        self.send_response(500)
                        self.end_headers()
                        return
                    hooks.bodies.append(json.loads(raw))
                    hooks.paths.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """A URL with a secret-looking path."""
        return f"http://127.0.0.1:{self.server.server_port}/hooks/T0/B0/s3cr3t-token"

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The bodies received (of one event)."""
        with self._lock:
            return [b for b in self.bodies if event is None or b.get("event") == event]

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def serve_mail(**kwargs: Any) -> Iterator[Mailbox]:
    """A started :class:`Mailbox`, stopped afterwards (for fixtures)."""
    box = Mailbox(**kwargs).start()
    try:
        yield box
    finally:
        box.stop()
