"""Plugin settings as attrs classes: unknown keys, missing keys and bad values refused in
one line that names the setting.

A plugin declares its settings as a frozen attrs class deriving from
:class:`PluginSettings`, each field with a validator from here (or its own raising
:func:`refuse`), and parses the mapping it is given (a queue's stored settings, a log
store's ``[norc.log_store_settings]``) with :meth:`PluginSettings.parse`::

    @attrs.frozen(kw_only=True)
    class SpoolSettings(PluginSettings):
        kind = "spool queue"
        path: str = attrs.field(validator=text())
        poll: float | None = attrs.field(default=None, validator=optional(number(0, 60)))

    SpoolSettings.parse({"path": "/var/spool/norc", "pol": 1})
    # ConfigurationError: unknown spool queue setting(s) 'pol' (known: path, poll)

Optional settings default to None, meaning "not given": :meth:`PluginSettings.given`
returns only what was given, which is what a ``validate_settings`` returns to be
stored, so a default changed in a later release applies to queues created before it.
Nothing here imports a plugin's client library (:mod:`norc.aws` builds on it for boto3's
plugins without boto3).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NoReturn, Self

import attrs
from attrs.validators import optional as optional

from norc.errors import ConfigurationError

__all__ = [
    "PluginSettings",
    "boolean",
    "http_url",
    "number",
    "one_of",
    "optional",
    "refuse",
    "text",
    "whole_number",
]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

_URL = re.compile(r"https?://\S+")


@attrs.frozen(kw_only=True)
class PluginSettings:
    """Base of a plugin's settings class; subclasses are ``@attrs.frozen(kw_only=True)``."""

    #: What the settings belong to, as messages name it: ``"S3 log store"``, ``"SQS queue"``.
    kind: ClassVar[str] = "plugin"

    @classmethod
    def parse(cls, settings: Mapping[str, Any]) -> Self:
        """Build the settings from a mapping; raise :class:`ConfigurationError` naming the
        first unknown, missing or invalid key."""
        cls.check_keys(settings)
        fields = attrs.fields(cls)
        known = [f.name for f in fields]
        unknown = sorted(str(k) for k in settings if k not in known)
        if unknown:
            raise ConfigurationError(
                f"unknown {cls.kind} setting(s) {', '.join(map(repr, unknown))}"
                f" (known: {', '.join(known)})"
            )
        for field in fields:
            if field.default is attrs.NOTHING and field.name not in settings:
                raise ConfigurationError(f"the {cls.kind} needs the setting {field.name!r}")
        return cls(**settings)

    @classmethod
    def check_keys(cls, settings: Mapping[str, Any]) -> None:
        """Refuse keys before anything else is looked at (override; the base accepts all)."""

    def given(self) -> dict[str, Any]:
        """The settings that were given (not None), in field order: what to store."""
        return {k: v for k, v in attrs.asdict(self, recurse=False).items() if v is not None}


def refuse(instance: object, name: str, what: str, value: object) -> NoReturn:
    """Raise the one-line error for a bad value: ``<kind> setting '<name>' must be <what>,
    got <value>``."""
    kind = getattr(type(instance), "kind", "plugin")
    raise ConfigurationError(f"{kind} setting {name!r} must be {what}, got {value!r}")


def text(pattern: str | None = None, what: str = "a non-empty string") -> Validator:
    """A non-empty string (that fully matches ``pattern``, when given, described by ``what``)."""
    compiled = re.compile(pattern) if pattern is not None else None

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if (
            not isinstance(value, str)
            or not value.strip()
            or (compiled is not None and not compiled.fullmatch(value))
        ):
            refuse(instance, attribute.name, what, value)

    return check


def http_url(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An ``http://`` or ``https://`` URL."""
    if not isinstance(value, str) or not _URL.fullmatch(value):
        refuse(instance, attribute.name, "an http(s) URL", value)


def boolean(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """``true`` or ``false`` (not 1, not ``"yes"``)."""
    if not isinstance(value, bool):
        refuse(instance, attribute.name, "true or false", value)


def whole_number(low: int, high: int | None = None, what: str | None = None) -> Validator:
    """An int (not a bool) from ``low`` to ``high`` (no upper bound if None)."""
    if what is None:
        what = f"a whole number from {low} to {high}" if high is not None else f">= {low}"

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if type(value) is not int or value < low or (high is not None and value > high):
            refuse(instance, attribute.name, what, value)

    return check


def number(low: float, high: float, what: str | None = None) -> Validator:
    """An int or float (not a bool) from ``low`` to ``high``."""
    if what is None:
        what = f"a number from {low:g} to {high:g}"

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not low <= value <= high
        ):
            refuse(instance, attribute.name, what, value)

    return check


def one_of(*choices: str) -> Validator:
    """One of ``choices``."""
    what = ", ".join(map(repr, choices[:-1])) + f" or {choices[-1]!r}"

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value not in choices:
            refuse(instance, attribute.name, what, value)

    return check
