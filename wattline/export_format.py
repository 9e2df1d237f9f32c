"""Measurement rows as files: CSV with PowerRadar's export columns, or a JSON array.

Both the API's streamed exports and scheduled export jobs encode through here, in chunks
of rows (not a chunk per row: a streamed body moves each chunk across a thread)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import UTC
from typing import Any

import orjson

from wattline.queries import EXPORT_COLUMNS

CHUNK_ROWS = 2000
_JSON = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def csv_chunks(rows: Iterable[dict[str, Any]], every: int = CHUNK_ROWS) -> Iterator[bytes]:
    """Rows as CSV with the PowerRadar header, `every` rows per chunk, times as UTC 'Z'."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(EXPORT_COLUMNS)
    for n, row in enumerate(rows, start=1):
        row["time_utc"] = row["time_utc"].astimezone(UTC).isoformat().replace("+00:00", "Z")
        writer.writerow(["" if row[c] is None else row[c] for c in EXPORT_COLUMNS])
        if n % every == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


def json_chunks(rows: Iterable[dict[str, Any]], every: int = CHUNK_ROWS) -> Iterator[bytes]:
    """Rows as one JSON array, `every` rows per chunk."""
    yield b"["
    first = True
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == every:
            yield (b"" if first else b",") + orjson.dumps(chunk, option=_JSON)[1:-1]
            first, chunk = False, []
    if chunk:
        yield (b"" if first else b",") + orjson.dumps(chunk, option=_JSON)[1:-1]
    yield b"]"


def chunks(rows: Iterable[dict[str, Any]], fmt: str) -> Iterator[bytes]:
    """Rows in the format asked for ("csv" or "json")."""
    return csv_chunks(rows) if fmt == "csv" else json_chunks(rows)
