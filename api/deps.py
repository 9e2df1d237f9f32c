"""Request dependencies: a pooled connection and the authenticated principal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.problems import Problem
from wattline.accounts import Principal, authenticate_key

bearer = HTTPBearer(auto_error=False, description="An API key or a login token: `wl_XXXXXXXX.<secret>`")


def get_conn(request: Request) -> Iterator[psycopg.Connection[Any]]:
    with request.app.state.pool.connection() as conn:
        yield conn


Conn = Annotated[psycopg.Connection[Any], Depends(get_conn)]


def get_principal(conn: Conn, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                  ) -> Principal:
    if credentials is None:
        raise Problem(401, "Unauthorized", "send Authorization: Bearer <api key>",
                      headers={"WWW-Authenticate": "Bearer"})
    principal = authenticate_key(conn, credentials.credentials)
    if principal is None:
        raise Problem(401, "Unauthorized", "the key is unknown, expired or revoked",
                      headers={"WWW-Authenticate": "Bearer"})
    return principal


def require(scope: str) -> Callable[[Principal], Principal]:
    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.can(scope):
            raise Problem(403, "Forbidden", f"this key lacks the '{scope}' scope")
        return principal
    return check


Reader = Annotated[Principal, Depends(require("read"))]
Writer = Annotated[Principal, Depends(require("write"))]
Commissioner = Annotated[Principal, Depends(require("commission"))]
Admin = Annotated[Principal, Depends(require("admin"))]
