"""An OpenAPI document that tells the truth: every status a route can answer, with its
RFC 9457 problem body, is documented on that route.

What a route can answer follows from what it is: a route with credentials can answer 401,
403 and 404 (an id in its path, query or body that names nothing the caller may see); a
write 409; one with a body 400 (unparseable) and 413; every route 422 (an invalid request), 429 (a rate limit)
and 503 (no database, or no free connection)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PROBLEM = "application/problem+json"
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "field": {"type": "string", "description": "the input the problem concerns"},
        "errors": {"type": "array", "items": {"type": "object"}, "description": "schema errors of the request"},
    },
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}
WHY = {
    "400": "the request body cannot be parsed (not JSON, or not multipart where a file is expected)",
    "401": "no credentials, or credentials unknown, expired or revoked",
    "403": "the credentials lack the scope this needs",
    "404": "no such object, or one of another tenant (the same answer)",
    "409": "the change clashes with what exists",
    "413": "the request body is over the limit",
    "422": "the request is invalid",
    "429": "too many requests (per key, per address, or failed sign-ins)",
    "503": "the database cannot be reached, or no connection is free; retry later",
}
WRITES = {"post", "put", "patch", "delete"}


def statuses(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    """The error statuses this operation can answer."""
    out = ["422", "429", "503"]
    if operation.get("security"):
        out += ["401", "403", "404"]  # ids in the path, the query or the body may name nothing visible
    if method in WRITES:
        out.append("409")
    if "requestBody" in operation:
        out += ["400", "413"]
    if path == "/v1/auth/login":
        out.append("401")
    return sorted(set(out))


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the problem responses to every operation of an OpenAPI document (in place)."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status in statuses(path, method, operation):
                response: dict[str, Any] = {"description": WHY[status],
                                            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
                if status in ("429", "503"):
                    response["headers"] = RETRY_AFTER
                responses[status] = response  # FastAPI's own 422 says application/json: ours is a problem
    schema["components"]["schemas"].pop("HTTPValidationError", None)
    schema["components"]["schemas"].pop("ValidationError", None)
    return schema


def install(app: FastAPI) -> None:
    """Serve the documented schema as the app's OpenAPI."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
