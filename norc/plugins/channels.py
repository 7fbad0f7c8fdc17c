"""The built-in alert channels: ``email`` (SMTP) and ``webhook`` (HTTP POST of JSON).

Both give up within :data:`TIMEOUT` seconds, and neither writes a password or a
webhook's secret path anywhere: :meth:`describe` hides them and :meth:`secrets` lets
the delivery scrub them out of recorded errors.
"""

from __future__ import annotations

import json
import os
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from norc.alerts.channels import AlertError, Channel, ChannelError, Notification
from norc.pluginmarkers import hookimpl
from norc.registry import PluginRegistry

#: Seconds a connection, a read or an SMTP command may take before the attempt fails.
TIMEOUT: Final = 10.0
DEFAULT_SMTP: Final = "smtp://localhost:25"
_TRUE: Final = ("1", "true", "yes", "on")


def _smtp_url(options: Mapping[str, Any]) -> str:
    return str(options.get("smtp") or os.environ.get("NORC_SMTP_URL") or DEFAULT_SMTP)


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


class EmailChannel(Channel):
    """Mail to ``target`` (addresses separated by commas) through ``options["smtp"]``.

    The SMTP URL: ``smtp://host[:port]`` (plain, port 25), ``smtp://host:587?starttls=1``
    (upgraded with STARTTLS), ``smtps://host[:port]`` (TLS from the start, port 465);
    ``cafile=PATH`` in the query trusts a private CA's certificates as well;
    ``user:password@`` in it, or ``NORC_SMTP_USER``/``NORC_SMTP_PASSWORD`` in the
    sending daemon's environment, log in. Default: ``$NORC_SMTP_URL``, else
    ``smtp://localhost:25``. ``options["from"]`` is the sender (``norc@<host>``).
    """

    channel_name = "email"

    @classmethod
    def validate(cls, target: str, options: Mapping[str, Any]) -> None:
        """Addresses must look like addresses; the SMTP URL must be smtp:// or smtps://."""
        addresses = [a.strip() for a in target.split(",") if a.strip()]
        if not addresses or any("@" not in a or " " in a for a in addresses):
            raise AlertError(f"email: {target!r} is not a list of addresses")
        if options.get("smtp"):
            parts = urlsplit(str(options["smtp"]))
            if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
                raise AlertError(
                    f"email: SMTP URL {_hide_password(str(options['smtp']))!r} must be"
                    " smtp://host[:port] or smtps://host[:port]"
                )

    @classmethod
    def describe(cls, target: str, options: Mapping[str, Any]) -> str:
        """The addresses and the SMTP server, without its password."""
        return f"{target} via {_hide_password(_smtp_url(options))}"

    def _credentials(self) -> tuple[str | None, str | None]:
        parts = urlsplit(_smtp_url(self.options))
        if parts.username is not None:
            return unquote(parts.username), unquote(parts.password or "")
        return os.environ.get("NORC_SMTP_USER"), os.environ.get("NORC_SMTP_PASSWORD")

    def secrets(self) -> Sequence[str]:
        """The SMTP password, wherever it came from."""
        return [p for p in (self._credentials()[1],) if p]

    def send(self, notification: Notification) -> None:
        """One message to every address, over a connection opened for it."""
        parts = urlsplit(_smtp_url(self.options))
        query = parse_qs(parts.query)
        starttls = query.get("starttls", ["0"])[0].lower() in _TRUE
        # A private CA's certificates (a file of PEM), for servers the system does not trust.
        cafile = query.get("cafile", [None])[0]
        tls = ssl.create_default_context(cafile=cafile)
        host = parts.hostname or "localhost"
        message = EmailMessage()
        message["Subject"] = notification.title
        message["From"] = str(self.options.get("from") or f"norc@{socket.getfqdn()}")
        message["To"] = ", ".join(a.strip() for a in self.target.split(",") if a.strip())
        message.set_content(notification.text)
        user, password = self._credentials()
        smtp: smtplib.SMTP
        if parts.scheme == "smtps":
            smtp = smtplib.SMTP_SSL(host, parts.port or 465, timeout=TIMEOUT, context=tls)
        else:
            smtp = smtplib.SMTP(host, parts.port or 25, timeout=TIMEOUT)
        try:
            if starttls:
                smtp.starttls(context=tls)
            if user:
                smtp.login(user, password or "")
            smtp.send_message(message)
        except smtplib.SMTPException as exc:
            raise ChannelError(f"SMTP {host}: {exc}") from None
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()


class WebhookChannel(Channel):
    """POST the notification to the URL ``target``: the JSON body of docs/alerts.md, or,
    with ``options["format"] == "slack"``, Slack's ``text``/``blocks`` shape (for an
    incoming webhook). Any answer other than 2xx is a failed attempt."""

    channel_name = "webhook"

    @classmethod
    def validate(cls, target: str, options: Mapping[str, Any]) -> None:
        """http(s) URLs only; format json or slack."""
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AlertError("webhook: the URL must be http:// or https:// with a host")
        if options.get("format", "json") not in ("json", "slack"):
            raise AlertError(f"webhook: format must be json or slack, got {options['format']!r}")

    @classmethod
    def describe(cls, target: str, options: Mapping[str, Any]) -> str:
        """Scheme and host only: a webhook's path and query often are its secret."""
        parts = urlsplit(target)
        shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"
        return f"{shown} ({options.get('format', 'json')})"

    def secrets(self) -> Sequence[str]:
        """The URL's path and query (and password), which may be its token."""
        parts = urlsplit(self.target)
        return [s for s in (parts.path.strip("/"), parts.query, parts.password) if s]

    def body(self, notification: Notification) -> dict[str, Any]:
        """What is posted."""
        if self.options.get("format", "json") != "slack":
            return {"version": 1, **notification.data}
        text = notification.text
        if len(text) > 2900:  # a section's text is limited to 3000 characters
            text = text[:2900] + "\n…"
        return {
            "text": notification.title,
            "blocks": [
                {
                    "type": "header",
                    "text": {"type": "plain_text", "text": notification.title[:150]},
                },
                {"type": "section", "text": {"type": "mrkdwn", "text": f"```{text}```"}},
            ],
        }

    def send(self, notification: Notification) -> None:
        """One POST; raises on a refused connection, a timeout or a non-2xx answer."""
        request = urllib.request.Request(
            self.target,
            data=json.dumps(self.body(notification)).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "norc-alerts"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise ChannelError(f"webhook answered HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise ChannelError(f"webhook unreachable: {exc.reason}") from None


@hookimpl
def norc_register_channels(registry: PluginRegistry) -> None:
    """Provide the ``email`` and ``webhook`` channels."""
    registry.add_channel_type(EmailChannel)
    registry.add_channel_type(WebhookChannel)
