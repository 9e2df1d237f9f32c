"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/health", summary="200 when the API and its database answer; 503 otherwise",
            responses={200: {"content": {"application/json": {"example": {"status": "ok", "database": "ok"}}}},
                       503: {"content": {"application/json": {"example": {"status": "degraded",
                                                                         "database": "unreachable"}}}}})
def health(request: Request) -> JSONResponse:
    try:
        with request.app.state.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception:
        return JSONResponse({"status": "degraded", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})
