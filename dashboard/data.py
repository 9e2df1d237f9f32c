"""The dashboard's data access: the shared query layer, with the signed-in principal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

_pool: ConnectionPool | None = None


def set_pool(pool: ConnectionPool) -> None:
    global _pool
    _pool = pool


@contextmanager
def conn() -> Iterator[psycopg.Connection[Any]]:
    assert _pool is not None, "dashboard pool not initialised"
    with _pool.connection() as c:
        yield c
