"""The OpenAPI 3.1 description of ``/api/``, built from the same table that routes it."""

from __future__ import annotations

import re
from typing import Any

from norc.web.api import ENDPOINTS, Endpoint
from norc.web.security import CSRF_HEADER
from norc.web.validation import MAX_ID, MAX_NAME, NO_CONTROL

_PATH_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")

_ERROR = {
    "description": "an error, as JSON",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            }
        }
    },
}


def _path_schema(kind: str) -> dict[str, Any]:
    if kind == "id":
        return {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID}
    return {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "pattern": NO_CONTROL}


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": _path_schema(kind),
        }
        for name, kind in _PATH_PARAM.findall(endpoint.path)
    ]
    params += [
        {
            "name": p.name,
            "in": "query",
            "required": False,
            "description": p.description,
            "schema": p.schema(),
        }
        for p in endpoint.params
    ]
    responses: dict[str, Any] = {
        "200": {"description": "JSON", "content": {"application/json": {}}},
        "400": _ERROR,
        "404": _ERROR,
    }
    op: dict[str, Any] = {
        "operationId": endpoint.handler.__name__.strip("_"),
        "summary": endpoint.summary,
        "description": (endpoint.handler.__doc__ or "").strip(),
        "parameters": params,
        "responses": responses,
    }
    if endpoint.change:
        params.append(
            {
                "name": CSRF_HEADER,
                "in": "header",
                "required": True,
                "description": "the csrf_token of GET /api/session",
                "schema": {"type": "string"},
            }
        )
        responses.update({"401": _ERROR, "403": _ERROR, "409": _ERROR})
        op["security"] = [{"bearer": []}, {"basic": []}, {}]
        if endpoint.body_schema is not None:
            responses["413"] = _ERROR
            op["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": endpoint.body_schema}},
            }
    return op


def openapi_document() -> dict[str, Any]:
    """The whole description, as a JSON-ready dict."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        path = _PATH_PARAM.sub(lambda m: "{" + m[1] + "}", endpoint.path)
        paths.setdefault(path, {})[endpoint.method.lower()] = _operation(endpoint)
    paths["/api/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This description",
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Norc",
            "version": "1",
            "description": (
                "Watch and steer Norc. Reads are GET; every change is a POST that needs the"
                f" {CSRF_HEADER} header (from GET /api/session) and, when the server has"
                " credentials configured, a bearer token or HTTP basic credentials."
                ' Errors are {"error": message} with status 400, 401, 403, 404, 409 or 503.'
            ),
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            }
        },
        "paths": paths,
    }
