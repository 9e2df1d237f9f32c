"""RFC 9457 problem details for every error the API returns; never a stack trace."""

from __future__ import annotations

from typing import Any

import psycopg
import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from wattline.accounts import (
    LoginRefused,
    LoginThrottled,
    Overloaded,
    SecondFactorRequired,
    SecondFactorSetupRequired,
)
from wattline.errors import Conflict, DomainError, Forbidden, NotFound, RowErrors

log = structlog.get_logger("wattline.api")
PROBLEM = "application/problem+json"


class Problem(HTTPException):
    def __init__(self, status: int, title: str, detail: str = "", *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(status, detail or title, headers)
        self.title = title
        self.extra = extra


def not_found(what: str) -> Problem:
    # The same answer whether the object does not exist or belongs to another tenant.
    return Problem(404, "Not found", f"no such {what}")


def problem_response(status: int, title: str, detail: str, instance: str, headers: dict[str, str] | None = None,
                     **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "instance": instance, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _db_message(exc: psycopg.Error) -> str:
    """PostgreSQL's one-line reason (no SQL, no parameters, no stack)."""
    return (exc.diag.message_primary if exc.diag and exc.diag.message_primary else type(exc).__name__)[:300]


#: How each kind of refusal answers; any other DomainError is 422.
STATUS: dict[type[DomainError], int] = {NotFound: 404, Conflict: 409, Forbidden: 403, LoginRefused: 401,
                                        LoginThrottled: 429, Overloaded: 503, SecondFactorRequired: 401,
                                        SecondFactorSetupRequired: 403}


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status_code, exc.title, str(exc.detail), request.url.path, dict(exc.headers or {}),
                                **exc.extra)

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        # A core function's refusal: the same mapping for every route.
        status = STATUS.get(type(exc), 422)
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, LoginThrottled | Overloaded) else None
        if isinstance(exc, LoginRefused | SecondFactorRequired):
            headers = {"WWW-Authenticate": "Bearer"}
        extra: dict[str, Any] = {"field": exc.field} if exc.field else {}
        if isinstance(exc, RowErrors):
            extra["rows"] = [{"line": line, "detail": why} for line, why in exc.rows]
        return problem_response(status, exc.title, exc.detail, request.url.path, headers, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized", 403: "Forbidden"}
        return problem_response(exc.status_code, titles.get(exc.status_code, "HTTP error"), str(exc.detail),
                                request.url.path, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return problem_response(422, "Invalid request", "the request does not match the schema", request.url.path,
                                errors=errors)

    @app.exception_handler(psycopg.errors.DataError)
    async def _data(request: Request, exc: psycopg.errors.DataError) -> JSONResponse:
        # Values the schema admits but PostgreSQL cannot store (NUL bytes, out-of-range).
        return problem_response(422, "Invalid data", _db_message(exc), request.url.path)

    @app.exception_handler(psycopg.errors.IntegrityError)
    async def _integrity(request: Request, exc: psycopg.errors.IntegrityError) -> JSONResponse:
        status = 409 if isinstance(exc, psycopg.errors.UniqueViolation) else 422
        title = "Conflict" if status == 409 else "Invalid data"
        return problem_response(status, title, _db_message(exc), request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, psycopg.OperationalError | TimeoutError) or type(exc).__name__ == "PoolTimeout":
            log.warning("database unavailable", path=request.url.path, error=type(exc).__name__)
            return problem_response(503, "Service unavailable", "the database cannot be reached; retry later",
                                    request.url.path, {"Retry-After": "5"})
        log.exception("unhandled error", path=request.url.path)
        return problem_response(500, "Internal error", "an unexpected error occurred", request.url.path)
