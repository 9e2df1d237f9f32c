"""A sensor's measurements on request: its raw readings (either tier) bucketed by the same
Numba core as the rollups, as export rows. Rollups are kept per node, not per sensor, so a
sensor's history is computed when asked for."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from analytics.rollup import bucket_stats, readings_power
from wattline.buckets import bucket_bounds
from wattline.domain import Resolution
from wattline.queries import MeasurementBatch
from wattline.raw_readings import Raw


def sensor_buckets(meta: dict[str, Any], raw: Raw, resolution: Resolution, t_from: datetime, t_to: datetime,
                   gap_s: float) -> MeasurementBatch:
    """Buckets of [t_from, t_to) with readings; `meta` as `queries.sensor_readings` gives it
    (the node's voltage and power factor stand in where a reading has none)."""
    volts, pf = meta["electrical"].conductor_voltage_v, meta["electrical"].effective_power_factor
    nodes = {"device_id": [meta["id"]], "device_name": [meta["serial"]], "site_id": [meta["site_id"]],
             "site_name": [meta["site_name"]], "voltage_v": [volts], "power_factor": [pf]}
    n_raw = len(raw)
    current = raw.current_a.astype(np.float64)
    power = readings_power(current, raw.voltage_v.astype(np.float64), raw.power_factor.astype(np.float64),
                           np.full(n_raw, volts), np.full(n_raw, pf),
                           raw.power_w if meta["reports_power"] else None)  # a clamp's power is V × I × PF
    t0 = t_from.timestamp() // 60 * 60
    n = int((t_to.timestamp() - t0) // 60) + 1
    st = bucket_stats(np.zeros(n_raw, dtype=np.int64), raw.ts_s, power, current, 1, t0, 60.0, n, gap_s,
                      presorted=True)
    stamps = t0 + 60.0 * np.arange(n)
    inside = (stamps >= t_from.timestamp()) & (stamps < t_to.timestamp())
    keys, _ = bucket_bounds(stamps[inside], resolution, meta["timezone"])
    buckets, which = np.unique(keys, return_inverse=True)

    def per_bucket(col: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.bincount(which, weights=np.asarray(col)[0][inside], minlength=len(buckets)).astype(np.float64)

    energy, covered, amp_s, samples = (per_bucket(c) for c in (st.energy_wh, st.covered_s, st.amp_s, st.samples))
    keep = (covered > 0) | (samples > 0)
    safe = np.where(covered > 0, covered, 1.0)
    return MeasurementBatch(
        resolution.minutes, nodes, np.full(int(keep.sum()), meta["id"], dtype=np.int64),
        np.rint(buckets[keep] * 1e6).astype(np.int64), np.where(covered > 0, amp_s / safe, 0.0)[keep],
        np.where(covered > 0, energy * 3600 / safe, 0.0)[keep], energy[keep],
        np.full(int(keep.sum()), np.nan, dtype=np.float32), samples[keep].astype(np.int32))
