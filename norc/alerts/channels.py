"""The contract of a notification channel, and the message it is handed."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from norc.config import Settings
from norc.errors import NorcError


class AlertError(NorcError, ValueError):
    """An alert rule that cannot be saved, found or sent as asked."""


class ChannelError(NorcError):
    """A channel could not deliver a notification (the attempt is retried later)."""


@attrs.frozen(kw_only=True)
class Notification:
    """One message to send: a one-line ``title``, a plain-text ``text`` and the data.

    ``data`` is the documented JSON body a webhook posts (docs/alerts.md); channels
    that format their own message read what they need from it.
    """

    title: str
    text: str
    data: Mapping[str, Any]


class Channel(abc.ABC):
    """A way to deliver notifications: register subclasses with
    ``registry.add_channel_type(cls)`` from a plugin's ``norc_register_channels`` hook.

    A channel is built for each send from the rule's ``target`` (an address, a URL)
    and ``options`` (the rule's options; channel-specific keys are the channel's to
    define), plus the handle's settings. ``send`` raises :class:`ChannelError` (or any
    ``OSError``) when delivery failed: the attempt is recorded and retried with backoff.
    ``send`` must give up within a bounded time (a network timeout): it runs on the
    sending daemon's alert thread.
    """

    #: The name rules use (``--channel`` / the built-ins ``email`` and ``webhook``).
    channel_name: ClassVar[str]

    def __init__(self, *, target: str, options: Mapping[str, Any], settings: Settings) -> None:
        self.target = target
        self.options = dict(options)
        self.settings = settings

    @classmethod
    def validate(cls, target: str, options: Mapping[str, Any]) -> None:
        """Raise :class:`AlertError` if ``target``/``options`` cannot make a channel
        (called when a rule is saved). The default accepts anything."""
        return None

    @classmethod
    def describe(cls, target: str, options: Mapping[str, Any]) -> str:
        """What ``norc alert list`` and the web page show for the destination: never a
        secret (password, token). The default shows ``target``."""
        return target

    def secrets(self) -> Sequence[str]:
        """Strings that must never appear in an error recorded or logged for this
        channel (passwords, tokens); the delivery scrubs them out."""
        return ()

    @abc.abstractmethod
    def send(self, notification: Notification) -> None:
        """Deliver ``notification``, or raise :class:`ChannelError`/``OSError``."""
