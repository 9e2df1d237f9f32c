"""Database access: one psycopg 3 connection pool per process, and small helpers."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool

if TYPE_CHECKING:
    import numpy as np


def make_pool(database_url: str, *, min_size: int = 1, max_size: int = 8, name: str = "wattline",
              wait: bool = True) -> ConnectionPool:
    """A pool whose connections autocommit unless a `with conn.transaction()` opens one."""
    pool = ConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 5},
        # A request waits at most this long for a connection, then fails (503), rather
        # than hanging while the database is down.
        timeout=5.0,
        open=False,
    )
    # wait=False lets a service start while the database is down and answer 503 meanwhile.
    pool.open(wait=wait, timeout=30)
    return pool


#: libpq options for connections that live long (service loops, the gateway's writer): a peer
#: that has vanished (a crashed host, a cut link) is noticed in about half a minute, not hours.
#: A peer that acknowledges bytes and never answers is the callers' watchdogs' job.
LONG_LIVED: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                              "keepalives_count": 3, "tcp_user_timeout": 30_000}
#: The same on the server's side of the connection. After a cut link the server keeps the old
#: backend (mid-COPY, holding the row locks of the batch) until it notices the client is gone;
#: the gateway's retry of that batch would wait behind it. Set per session, not as a startup
#: option, so that connection poolers pass it.
SERVER_KEEPALIVE = ("SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; "
                    "SET tcp_keepalives_count = 3; SET tcp_user_timeout = 30000")


def connect_long_lived(database_url: str, *, connect_timeout: int = 5) -> psycopg.Connection[Any]:
    """An autocommit connection for a service that holds it for hours (see LONG_LIVED)."""
    conn = psycopg.connect(database_url, autocommit=True, connect_timeout=connect_timeout, **LONG_LIVED)
    try:
        conn.execute(SERVER_KEEPALIVE)
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def connect(database_url: str) -> Iterator[psycopg.Connection[dict[str, object]]]:
    """A short-lived autocommit connection with dict rows."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def with_database(database_url: str, dbname: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(database_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def database_name(database_url: str) -> str:
    """The database a URL names (default `postgres`)."""
    return urlsplit(database_url).path.lstrip("/") or "postgres"


def create_database(database_url: str) -> bool:
    """Create the URL's database if it is missing. True if it was created."""
    name = database_name(database_url)
    with connect(with_database(database_url, "postgres")) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        return True


def drop_database(database_url: str) -> None:
    """Drop the URL's database, disconnecting its sessions."""
    name = database_name(database_url)
    with connect(with_database(database_url, "postgres")) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name))
        )


# Row helpers that pick the row shape themselves, so that callers work the same whatever
# row factory the connection they were handed has (pools hand out dict rows, scripts tuples).
Params = dict[str, Any] | tuple[Any, ...]
#: SQL text, or SQL composed with `psycopg.sql` (identifiers are never formatted into text).
Query = str | sql.SQL | sql.Composed


def fetch_all(conn: psycopg.Connection[Any], query: Query, params: Params = ()) -> list[dict[str, Any]]:
    """All rows as dicts."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def fetch_one(conn: psycopg.Connection[Any], query: Query, params: Params = ()) -> dict[str, Any] | None:
    """The first row as a dict, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchone()


def id_array(ids: Iterable[int]) -> str:
    """Ids as one PostgreSQL array literal, passed as `%s::bigint[]`. A rollup pass names
    ~250,000 sensors: psycopg's list dumper spends ~1.3 µs an id on them (0.33 s a list),
    joining their digits ~0.26 µs."""
    return "{" + ",".join(map(str, ids)) + "}"


def fetch_tuples(conn: psycopg.Connection[Any], query: Query, params: Params = ()) -> list[tuple[Any, ...]]:
    """All rows as tuples."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()


def copy_out(conn: psycopg.Connection[Any], query: sql.Composable) -> Generator[memoryview]:
    """`COPY (…) TO STDOUT` through libpq (psycopg.pq) directly: the rows' bytes as they
    arrive, one `get_copy_data` call a row and nothing else.

    psycopg's own `Copy` spends four Python frames a row (about 0.6 µs), which held a bulk
    export to ~1.4 M rows/s before any encoding; this loop is what is left of it. Waiting
    happens in `select`, which releases the GIL, so a reading thread and an encoding thread
    overlap; so does waiting for the COPY to start (`result`). Stopped early (the consumer
    went away), the COPY is cancelled and drained, so the connection is usable again; a
    failed COPY raises psycopg's error for its SQLSTATE."""
    import select

    from psycopg import errors, pq

    pg = conn.pgconn

    def fail(result: pq.abc.PGresult) -> Exception:
        state = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
        message = (result.error_message or b"").decode(errors="replace").strip()
        return errors.lookup(state)(message) if state else psycopg.DatabaseError(message)

    def result() -> pq.abc.PGresult | None:
        # libpq's PQgetResult blocks while the server works, and psycopg's binding holds
        # the GIL through it: a COPY queued behind a lock (the packing job dropping a chunk)
        # then froze every thread of the process, the lock holder's among them, for good.
        # Wait in select (which releases the GIL) until the result is in.
        pg.consume_input()
        while pg.is_busy():
            select.select([pg.socket], [], [])
            pg.consume_input()
        return pg.get_result()

    pg.send_query(query.as_bytes(conn))
    started = result()  # the COPY_OUT result, or the query's error
    if started is None or started.status != pq.ExecStatus.COPY_OUT:
        failure = started
        while (extra := result()) is not None:
            failure = failure or extra
        raise fail(failure) if failure is not None else psycopg.DatabaseError("COPY did not start")
    finished = False
    try:
        while True:
            nbytes, data = pg.get_copy_data(1)
            if nbytes > 0:
                yield data
            elif nbytes == 0:  # nothing buffered: wait for the socket
                select.select([pg.socket], [], [])
                pg.consume_input()
            else:
                break
        finished = True
    finally:
        if not finished:
            conn.cancel()
            while pg.get_copy_data(0)[0] >= 0:
                pass
        failure = None
        while (done := result()) is not None:
            if done.status != pq.ExecStatus.COMMAND_OK:
                failure = done
        if failure is not None and finished:
            raise fail(failure)


#: 2000-01-01 in Unix microseconds: where PostgreSQL's binary timestamptz counts from.
PG_EPOCH_US = 946_684_800_000_000
_COPY_BINARY_HEADER = 19  # signature, flags, header extension length
_COPY_BINARY_TRAILER = 2  # a field count of -1


def copy_out_arrays(conn: psycopg.Connection[Any], query: sql.Composable, dtype: np.dtype[np.void], *,
                    rows: int = 16_384) -> Iterator[np.ndarray[Any, np.dtype[np.void]]]:
    """`COPY (…) TO STDOUT (FORMAT BINARY)` of fixed-width rows as structured numpy arrays of
    about `rows` rows (the last one may be shorter, or empty). `dtype` spells a whole row:
    the int16 field count, then each field's int32 length and value; the query must yield
    no NULL (its length would be -1 and the row shorter). Nothing is done per row in Python
    but receive it (`copy_out`)."""
    import numpy as np

    width = dtype.itemsize
    pending = bytearray()
    skip = _COPY_BINARY_HEADER

    def take(end: int) -> np.ndarray[Any, np.dtype[np.void]]:
        whole = (end - skip) // width * width
        with memoryview(pending) as view:  # one copy of the rows, not a slice's and then a bytes'
            arr = np.frombuffer(view[skip:skip + whole], dtype=dtype).copy()
        del pending[:skip + whole]
        return arr

    for block in copy_out(conn, query):
        pending += block
        if len(pending) >= rows * width + skip:
            yield take(len(pending))
            skip = 0
    yield take(max(skip, len(pending) - _COPY_BINARY_TRAILER))
