"""Measurement rows as files: CSV with PowerRadar's export columns, or a JSON array.

The API's streamed exports, scheduled export jobs and a sensor's on-request buckets all
encode through here. Rows arrive as column batches (`queries.MeasurementBatch`) and are
written by polars a batch at a time, in its native code: per-row Python (the csv module,
a dict per row for orjson) cost about 30 µs a row, which made a month of 1-minute rows
take seconds. polars is imported on first use, so processes that never export do not
carry it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Generator, Iterable, Iterator
from queue import Empty, Full, Queue
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from wattline.queries import EXPORT_COLUMNS, MeasurementBatch

if TYPE_CHECKING:
    import polars as pl

T = TypeVar("T")


_NODE_SCHEMA = {"device_id": "Int64", "device_name": "String", "site_id": "Int64", "site_name": "String",
                "voltage_v": "Float64", "power_factor": "Float64"}


def _frame(batch: MeasurementBatch, *, json_strings: bool = False) -> pl.DataFrame:
    """The batch as one frame in EXPORT_COLUMNS order; `json_strings`: the text columns
    already JSON-encoded, quotes included (they are per node, so this costs nothing).

    Per-node columns and time stamps repeat (a batch holds a few nodes over the same
    buckets): each distinct value is formatted once and gathered, not formatted per row."""
    import orjson
    import polars as pl

    ids = np.asarray(batch.nodes["device_id"], dtype=np.int64)
    order = np.argsort(ids)
    node_index = order[np.searchsorted(ids, batch.device_id, sorter=order)]
    stamps, stamp_index = np.unique(batch.ts_us, return_inverse=True)
    times = np.char.add(np.datetime_as_string(stamps.astype("datetime64[us]"), unit="s"), "Z")
    columns: dict[str, pl.Series] = {}
    for name in EXPORT_COLUMNS:
        if name in batch.nodes:
            values = batch.nodes[name]
            if json_strings and name in ("device_name", "site_name"):
                values = [orjson.dumps(v).decode() for v in values]
            columns[name] = pl.Series(name, values, dtype=getattr(pl, _NODE_SCHEMA[name])).gather(node_index)
        elif name == "time_utc":
            columns[name] = pl.Series(name, times, dtype=pl.String).gather(stamp_index)
        elif name == "resolution_minutes":
            columns[name] = pl.repeat(batch.resolution_minutes, len(batch), dtype=pl.Int32, eager=True)
        elif name == "coverage":
            columns[name] = pl.Series(name, batch.coverage, dtype=pl.Float32).fill_nan(None)
        elif name in ("generation_wh", "export_wh"):
            values = getattr(batch, name)
            columns[name] = pl.Series(name, values, dtype=pl.Float64).fill_nan(None) if values is not None else \
                pl.repeat(None, len(batch), dtype=pl.Float64, eager=True)
        else:
            columns[name] = pl.Series(name, getattr(batch, name))
    return pl.DataFrame(columns)


def _json_rows(batch: MeasurementBatch) -> bytes:
    """The batch's rows as JSON objects joined by commas, built column-wise by polars'
    string kernels (twice as fast as its own `write_json`, byte for byte the same JSON)."""
    import polars as pl

    frame = _frame(batch, json_strings=True)
    parts: list[pl.Expr] = []
    for k, (name, dtype) in enumerate(frame.schema.items()):
        parts.append(pl.lit(("{" if k == 0 else ",") + f'"{name}":'))
        column = pl.col(name)
        if name == "time_utc":
            parts += [pl.lit('"'), column, pl.lit('"')]
        elif dtype == pl.String:
            parts.append(column.fill_null("null"))  # already JSON strings
        elif dtype.is_float():
            parts.append(pl.when(column.is_finite()).then(column.cast(pl.String)).otherwise(pl.lit("null")))
        else:
            parts.append(column.cast(pl.String).fill_null("null"))
    parts.append(pl.lit("}"))
    text: str = frame.select(pl.concat_str(parts).str.join(",")).item()
    return text.encode()


def csv_chunks(batches: Iterable[MeasurementBatch]) -> Iterator[bytes]:
    """CSV with the PowerRadar header, a chunk per batch, times as UTC 'Z'."""
    yield (",".join(EXPORT_COLUMNS) + "\n").encode()
    for batch in batches:
        if len(batch):
            yield _frame(batch).write_csv(include_header=False).encode()


def json_chunks(batches: Iterable[MeasurementBatch]) -> Iterator[bytes]:
    """One JSON array of row objects, a chunk per batch."""
    yield b"["
    first = True
    for batch in batches:
        if len(batch):
            yield (b"" if first else b",") + _json_rows(batch)
            first = False
    yield b"]"


def prefetched(batches: Iterable[T], depth: int = 1) -> Generator[T]:
    """The same items, the next ones read by a thread while the caller works on this one.

    Reading a COPY holds the GIL (a Python call per row), polars' encoding releases it, so
    on two cores the two overlap. At most `depth` items wait, so memory stays bounded. If
    the caller stops early (a client went away), the reader stops and closes `batches`
    before this returns: the connection under it is free again when the caller goes on."""
    queue: Queue[tuple[str, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def read() -> None:
        source = iter(batches)
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        queue.put(("item", item), timeout=0.05)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    break
            else:
                queue.put(("end", None))
        except BaseException as exc:  # handed to the caller, which raises it as its own
            queue.put(("error", exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=read, name="export-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            kind, value = queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting to put, then let it finish
            with contextlib.suppress(Empty):
                queue.get(timeout=0.05)
        reader.join()


def chunks(batches: Iterable[MeasurementBatch], fmt: str) -> Iterator[bytes]:
    """Batches in the format asked for ("csv" or "json"), read ahead while each is encoded."""
    ahead = prefetched(batches)
    try:
        yield from csv_chunks(ahead) if fmt == "csv" else json_chunks(ahead)
    finally:
        ahead.close()  # joins the reader, wherever the caller stopped


def body(batches: Iterable[MeasurementBatch], fmt: str) -> bytes:
    """The whole file at once (scheduled exports, a sensor's buckets)."""
    return b"".join(chunks(batches, fmt))

