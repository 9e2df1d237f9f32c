"""From raw readings to per-circuit bucket statistics (the pure part of the core)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from analytics.kernels import integrate_buckets, power_w

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass
class BucketStats:
    """Dense [series × bucket] statistics starting at t0, `bucket_s` wide."""

    t0: float
    bucket_s: float
    energy_wh: F64
    covered_s: F64
    amp_s: F64
    max_power_w: F64
    samples: I64

    @property
    def coverage(self) -> F64:
        return np.asarray(np.minimum(self.covered_s / self.bucket_s, 1.0))

    @property
    def mean_power_w(self) -> F64:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(np.where(self.covered_s > 0, self.energy_wh * 3600.0 / self.covered_s, 0.0))

    @property
    def mean_current_a(self) -> F64:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(np.where(self.covered_s > 0, self.amp_s / self.covered_s, 0.0))


def sort_dedup(series: I64, ts: F64, *columns: F64) -> tuple[I64, F64, list[F64]]:
    """Order by (series, ts) and keep the first of each duplicate (series, ts)."""
    order = np.lexsort((ts, series))
    s = series[order]
    t = ts[order]
    keep = np.ones(len(s), dtype=bool)
    if len(s) > 1:
        keep[1:] = (s[1:] != s[:-1]) | (t[1:] != t[:-1])
    return s[keep], t[keep], [np.asarray(c)[order][keep] for c in columns]


def bucket_stats(series: I64, ts: F64, power: F64, current: F64, n_series: int, t0: float,
                 bucket_s: float, n_buckets: int, gap_s: float, *, presorted: bool = False) -> BucketStats:
    if not presorted:
        series, ts, (power, current) = sort_dedup(series, ts, power, current)
    e, cov, amp, mx, smp = integrate_buckets(
        np.ascontiguousarray(series, dtype=np.int64), np.ascontiguousarray(ts, dtype=np.float64),
        np.ascontiguousarray(power, dtype=np.float64), np.ascontiguousarray(current, dtype=np.float64),
        n_series, float(t0), float(bucket_s), int(n_buckets), float(gap_s))
    return BucketStats(t0, bucket_s, e, cov, amp, mx, smp)


def readings_power(current: F64, voltage: F64, power_factor: F64, default_v: F64, default_pf: F64,
                   measured: npt.NDArray[np.floating[Any]] | None = None) -> F64:
    """Each reading's power (kernels.power_w); `measured` is a meter's own power, NaN for a clamp."""
    if measured is None:
        measured = np.full(len(current), np.nan)
    return power_w(*(np.ascontiguousarray(c, dtype=np.float64)
                     for c in (current, voltage, power_factor, default_v, default_pf, measured)))
