"""Who may read and who may steer: authentication, local access, CSRF and Origin checks.

The rules, in one place:

* **Anonymous access is local access only**: a request without credentials is served
  only when it comes from a loopback client *and* names a loopback host in its ``Host``
  header (``localhost``, ``127.0.0.1``, ``[::1]``). The second check defeats DNS
  rebinding, where a foreign web page resolves its own name to 127.0.0.1.
* Credentials are a bearer token (``Authorization: Bearer ...``) or HTTP basic
  user/password. When any are configured, every change needs them; with
  ``require_auth`` every API read needs them too. Without configured credentials,
  changes are allowed to local access only.
* Every change is a POST carrying ``X-Norc-CSRF`` equal to the token that
  ``GET /api/session`` hands out, and, when the browser sends ``Origin`` (or
  ``Sec-Fetch-Site``), coming from this very origin. A foreign page can neither read
  the token nor send the custom header without a CORS preflight, which is never
  granted.
* ``read_only`` refuses every change with 403, whoever asks.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

import attrs
from starlette.requests import Request

from norc.errors import ConfigurationError

#: The header a state-changing request must carry, equal to the session's CSRF token.
CSRF_HEADER = "X-Norc-CSRF"


class HTTPProblem(Exception):
    """A request refused: becomes a JSON ``{"error": ...}`` response with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^@/\s]+@")


def mask_url_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL as ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or address, maybe bracketed) is this machine's loopback."""
    if not host:
        return False
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _normal(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _host_set(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(_normal(h) for h in hosts)


def _host_name(host_header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8000`` → ``::1``; ``""`` if malformed)."""
    try:
        return urlsplit(f"//{host_header}").hostname or ""
    except ValueError:  # an unclosed IPv6 bracket
        return ""


@attrs.frozen
class Guard:
    """The web app's security settings and the checks built on them."""

    read_only: bool = False
    #: Secrets are left out of the repr, so no log line or traceback shows them.
    token: str | None = attrs.field(default=None, repr=False)
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    require_auth: bool = False
    #: Handed to the page by ``GET /api/session``; every change must echo it.
    csrf_token: str = attrs.field(factory=lambda: secrets.token_urlsafe(32), repr=False)
    #: Host names (beyond loopback names and IP addresses) this server answers to;
    #: ``"*"`` is any.
    allowed_hosts: frozenset[str] = attrs.field(default=frozenset(), converter=_host_set)

    def __attrs_post_init__(self) -> None:
        if (self.user is None) != (self.password is None):
            raise ConfigurationError("web: give both a user and a password, or neither")
        if self.token is not None and len(self.token) < 8:
            raise ConfigurationError("web: the token must be at least 8 characters long")
        if self.require_auth and not self.has_credentials:
            raise ConfigurationError("web: require_auth needs a token or a user and password")

    def scrub(self, text: str) -> str:
        """``text`` without this guard's secrets and without passwords in URLs."""
        for secret in (self.token, self.password, self.csrf_token):
            if secret:
                text = text.replace(secret, "***")
        return mask_url_passwords(text)

    @property
    def has_credentials(self) -> bool:
        """Whether a token or a user/password is configured."""
        return self.token is not None or self.user is not None

    def challenge(self) -> dict[str, str]:
        """The ``WWW-Authenticate`` header for a 401 (basic first: browsers prompt for it)."""
        scheme = "Basic" if self.user is not None else "Bearer"
        return {"WWW-Authenticate": f'{scheme} realm="norc"'}

    def credentials(self, request: Request) -> bool | None:
        """True for valid credentials, False for wrong ones, None when none were sent."""
        header = request.headers.get("authorization")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and self.token is not None:
            return hmac.compare_digest(value.encode(), self.token.encode())
        if scheme.lower() == "basic" and self.user is not None and self.password is not None:
            try:
                user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            ok_user = hmac.compare_digest(user.encode(), self.user.encode())
            ok_password = hmac.compare_digest(password.encode(), self.password.encode())
            return bool(sep) and ok_user and ok_password
        return False

    def check_host(self, request: Request) -> None:
        """Refuse a ``Host`` header naming a host this server was not told it is.

        Loopback names and IP addresses are always accepted (DNS rebinding needs a name
        the attacker controls); any other name must be in ``allowed_hosts``. Guards the
        CSRF token (``GET /api/session``) and every change.
        """
        name = _normal(_host_name(request.headers.get("host", "")))
        if is_loopback(name) or "*" in self.allowed_hosts or name in self.allowed_hosts:
            return
        try:
            ipaddress.ip_address(name)
            return
        except ValueError:
            pass
        shown = repr(name[:100]) if name else "(none)"
        raise HTTPProblem(
            403,
            f"Host {shown} is not a name this server answers to: it answers to loopback"
            " names, IP addresses and its allowed hosts (serve(allowed_hosts=...),"
            " NORC_WEB_ALLOWED_HOSTS)",
        )

    def is_local(self, request: Request) -> bool:
        """A loopback client that addressed the server by a loopback name."""
        client = request.client.host if request.client else None
        return is_loopback(client) and is_loopback(_host_name(request.headers.get("host", "")))

    def authenticated(self, request: Request) -> bool:
        """Check credentials, if sent: wrong ones are refused at once (401)."""
        given = self.credentials(request)
        if given is False:
            raise HTTPProblem(401, "wrong credentials", self.challenge())
        return bool(given)

    def check_read(self, request: Request) -> None:
        """Refuse a read that may not see Norc's data."""
        if self.authenticated(request):
            return
        if self.require_auth:
            raise HTTPProblem(401, "authentication required", self.challenge())
        if not self.is_local(request):
            if self.has_credentials:
                raise HTTPProblem(401, "authentication required", self.challenge())
            self._refuse_remote()

    def check_change(self, request: Request) -> None:
        """Refuse a change that is not allowed, not authenticated or not from this page."""
        if self.read_only:
            raise HTTPProblem(403, "this Norc web server is read-only")
        self.check_host(request)
        if not self.authenticated(request):
            if self.has_credentials:
                raise HTTPProblem(
                    401, "authentication required to change anything", self.challenge()
                )
            if not self.is_local(request):
                self._refuse_remote()
        self.check_same_origin(request)
        sent = request.headers.get(CSRF_HEADER.lower(), "")
        if not hmac.compare_digest(sent.encode(), self.csrf_token.encode()):
            raise HTTPProblem(
                403, f"missing or wrong {CSRF_HEADER} header (reload the page: GET /api/session)"
            )

    def check_same_origin(self, request: Request) -> None:
        """A browser request must come from a page of this server (Origin and Fetch-Site)."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise HTTPProblem(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
        origin = request.headers.get("origin")
        if origin is None:
            return
        # Hosts only: a proxy may end TLS, so the scheme seen here can differ.
        host = request.headers.get("host", "").lower()
        try:
            netloc = urlsplit(origin).netloc.lower()
        except ValueError:  # an unclosed IPv6 bracket
            netloc = None
        if netloc != host:
            raise HTTPProblem(403, f"cross-origin request refused (Origin {origin[:200]!r})")

    def _refuse_remote(self) -> None:
        raise HTTPProblem(
            403,
            "only local access (a loopback client using a loopback host name) is allowed"
            " without credentials: configure a token or a user and password",
        )
