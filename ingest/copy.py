"""PostgreSQL binary COPY rows built with numpy: no Python work per row.

Rows are grouped by which of the four optional columns (voltage, power factor, RSSI,
power) are NULL; each group is one fixed-width structured array, since a NULL field in the
binary format is a length of -1 with no data. COPY does not care about row order.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from psycopg.adapt import Dumper
from psycopg.postgres import types as pg_types
from psycopg.pq import Format

from wattline.db import PG_EPOCH_US

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)

COLUMNS = ("sensor_id", "ts", "current_a", "voltage_v", "power_factor", "rssi_dbw", "power_w", "bridge_id")
_OPTIONAL = ("voltage_v", "power_factor", "rssi_dbw", "power_w")
_BRIDGE = f"l{3 + len(_OPTIONAL)}"  # the bridge id's length field, after the optional ones


def _row_dtype(present: tuple[bool, ...]) -> np.dtype[np.void]:
    fields: list[tuple[str, str]] = [("n", ">i2"), ("l0", ">i4"), ("sensor_id", ">i8"), ("l1", ">i4"), ("ts", ">i8"),
                                     ("l2", ">i4"), ("current_a", ">f4")]
    for i, (name, here) in enumerate(zip(_OPTIONAL, present, strict=True)):
        fields.append((f"l{3 + i}", ">i4"))
        if here:
            fields.append((name, ">f4"))
    fields += [(_BRIDGE, ">i4"), ("bridge_id", ">i8")]
    return np.dtype(fields)


def encode_readings(sensor_id: npt.NDArray[np.int64], ts_unix_s: npt.NDArray[np.float64],
                    current_a: npt.ArrayLike, voltage_v: npt.ArrayLike, power_factor: npt.ArrayLike,
                    rssi_dbw: npt.ArrayLike, power_w: npt.ArrayLike, bridge_id: npt.NDArray[np.int64]) -> bytes:
    """One COPY … (FORMAT BINARY) stream; NaN in an optional column is written as NULL."""
    optional = [np.asarray(c, np.float32) for c in (voltage_v, power_factor, rssi_dbw, power_w)]
    # Round to whole microseconds, PostgreSQL's resolution, so resends compare equal.
    ts_us = np.rint(np.asarray(ts_unix_s, dtype=np.float64) * 1e6).astype(np.int64) - PG_EPOCH_US
    current = np.asarray(current_a, np.float32)
    pattern = sum((~np.isnan(col)).astype(np.int8) << i for i, col in enumerate(optional))
    chunks = [HEADER]
    for code in np.unique(pattern):
        present = tuple(bool(code >> i & 1) for i in range(len(_OPTIONAL)))
        pick = np.nonzero(pattern == code)[0]
        rows = np.empty(len(pick), dtype=_row_dtype(present))
        rows["n"] = len(COLUMNS)
        rows["l0"] = rows["l1"] = rows[_BRIDGE] = 8
        rows["l2"] = 4
        rows["sensor_id"] = sensor_id[pick]
        rows["ts"] = ts_us[pick]
        rows["current_a"] = current[pick]
        rows["bridge_id"] = bridge_id[pick]
        for i, (name, here) in enumerate(zip(_OPTIONAL, present, strict=True)):
            rows[f"l{3 + i}"] = 4 if here else -1
            if here:
                rows[name] = optional[i][pick]
        chunks.append(rows.tobytes())
    chunks.append(TRAILER)
    return b"".join(chunks)


class SensorIds:
    """A bigint[] query parameter sent in PostgreSQL's binary array format, built with
    numpy: adapting 100,000 Python ints, or joining them into an array literal, costs
    more than the INSERT that uses them."""

    def __init__(self, ids: npt.NDArray[np.int64]) -> None:
        header = np.array([1, 0, pg_types["int8"].oid, len(ids), 1], dtype=">i4").tobytes()  # 1-D, no NULLs, from 1
        elements = np.empty(len(ids), dtype=[("length", ">i4"), ("value", ">i8")])
        elements["length"] = 8
        elements["value"] = ids
        self.data = header + elements.tobytes()


class SensorIdsDumper(Dumper):
    """Register on a connection for `SensorIds`, and pass them with a `%b` placeholder."""

    format = Format.BINARY
    oid = pg_types["int8"].array_oid

    def dump(self, obj: SensorIds) -> bytes:
        return obj.data
