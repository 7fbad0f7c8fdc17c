"""Checks on every input of the API, so a bad value is a 400 naming it, never a 500.

Ids are 64-bit (the database's ``BIGINT``), priorities 32-bit (``INTEGER``); no string
may hold control characters (NUL and the rest of Unicode's ``Cc``) or lone surrogates.
Request bodies are checked against the same JSON schemas the OpenAPI document states,
with the small subset of JSON Schema those use: ``type`` (object, string, integer,
number, boolean), ``properties``, ``required``, ``additionalProperties: false``,
``enum``, ``minimum``/``maximum``/``exclusiveMinimum`` and ``maxLength``.
"""

from __future__ import annotations

import re
from typing import Any

from norc.web.security import HTTPProblem

#: The largest id (a signed 64-bit integer, as the database stores ids).
MAX_ID = 2**63 - 1
#: The range of a 32-bit signed integer (priorities are stored as ``INTEGER``).
MIN_INT32, MAX_INT32 = -(2**31), 2**31 - 1
#: The longest name (queue, host) the database stores.
MAX_NAME = 255

#: The JSON Schema ``pattern`` of a string without control characters.
NO_CONTROL = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_INTEGER = re.compile(r"^[+-]?[0-9]{1,30}$")


def check_text(name: str, value: str) -> str:
    """``value`` unless it holds a control character or a lone surrogate (then a 400)."""
    if _CONTROL.search(value):
        raise HTTPProblem(400, f"{name} must not contain control characters")
    return value


def parse_integer(name: str, text: str, low: int | None, high: int | None) -> int:
    """A query parameter's integer, within ``[low, high]`` (a 400 naming it otherwise)."""
    if not _INTEGER.match(text):
        raise HTTPProblem(400, f"{name} must be an integer, got {text[:40]!r}")
    value = int(text)
    _check_range(name, value, low, high)
    return value


def _check_range(name: str, value: float, low: float | None, high: float | None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            bounds = f"between {low} and {high}"
        elif low is not None:
            bounds = f">= {low}"
        else:
            bounds = f"<= {high}"
        raise HTTPProblem(400, f"{name} must be {bounds}, got {value}")


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a JSON object",
}


def _is_type(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    raise ValueError(f"unsupported schema type {kind!r}")  # pragma: no cover


def check_value(name: str, value: Any, schema: dict[str, Any]) -> None:
    """Refuse ``value`` (a 400 naming ``name``) unless it matches ``schema``."""
    kind = schema.get("type")
    if kind is not None and not _is_type(value, kind):
        raise HTTPProblem(400, f"{name} must be {_TYPE_NAMES[kind]}, got {_show(value)}")
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(
            str(v) for v in schema["enum"] if not isinstance(v, str) or v == v.upper()
        )
        raise HTTPProblem(400, f"{name} must be one of {choices}, got {_show(value)}")
    if isinstance(value, str):
        check_text(name, value)
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise HTTPProblem(400, f"{name} must be at most {schema['maxLength']} characters")
    if kind in ("integer", "number"):
        _check_range(name, value, schema.get("minimum"), schema.get("maximum"))
        low = schema.get("exclusiveMinimum")
        if low is not None and not value > low:
            raise HTTPProblem(400, f"{name} must be > {low}, got {value}")
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in value:
                raise HTTPProblem(400, f"{key} is required")
        for key, item in value.items():
            check_text("a field name", key)
            if key in properties:
                check_value(key, item, properties[key])
            elif schema.get("additionalProperties") is False:
                known = ", ".join(properties) or "none"
                raise HTTPProblem(400, f"unknown field {key[:40]!r} (known fields: {known})")


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    text = "null" if value is None else text
    return text if len(text) <= 40 else text[:37] + "..."
