"""PostgreSQL binary COPY rows built with numpy, for fixed-width staging rows.

Every staging column is NOT NULL and fixed width (NaN stands for "not measured" and is
turned into NULL by the INSERT … SELECT), so a whole batch is one structured array and
one `tobytes()`: no Python work per row.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds

STAGING_COLUMNS = ("sensor_id", "ts", "current_a", "voltage_v", "power_factor", "rssi_dbw", "bridge_id")
_ROW = np.dtype([
    ("n", ">i2"),
    ("l0", ">i4"), ("sensor_id", ">i8"),
    ("l1", ">i4"), ("ts", ">i8"),
    ("l2", ">i4"), ("current_a", ">f4"),
    ("l3", ">i4"), ("voltage_v", ">f4"),
    ("l4", ">i4"), ("power_factor", ">f4"),
    ("l5", ">i4"), ("rssi_dbw", ">f4"),
    ("l6", ">i4"), ("bridge_id", ">i8"),
])


def encode_readings(sensor_id: npt.NDArray[np.int64], ts_unix_s: npt.NDArray[np.float64],
                    current_a: npt.ArrayLike, voltage_v: npt.ArrayLike, power_factor: npt.ArrayLike,
                    rssi_dbw: npt.ArrayLike, bridge_id: npt.NDArray[np.int64]) -> bytes:
    rows = np.empty(len(sensor_id), dtype=_ROW)
    rows["n"] = 7
    for i, width in enumerate((8, 8, 4, 4, 4, 4, 8)):
        rows[f"l{i}"] = width
    rows["sensor_id"] = sensor_id
    # Round to whole microseconds, PostgreSQL's resolution, so resends compare equal.
    rows["ts"] = np.rint(np.asarray(ts_unix_s, dtype=np.float64) * 1e6).astype(np.int64) - PG_EPOCH_US
    rows["current_a"] = current_a
    rows["voltage_v"] = voltage_v
    rows["power_factor"] = power_factor
    rows["rssi_dbw"] = rssi_dbw
    rows["bridge_id"] = bridge_id
    return HEADER + rows.tobytes() + TRAILER
