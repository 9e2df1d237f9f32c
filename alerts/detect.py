"""The arithmetic of alerting, free of the database: runs of a condition held long enough,
robust baselines, compressor starts. Inputs are evenly stepped series (NaN = no data)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

#: MAD × this estimates the standard deviation of normally distributed data.
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Run:
    """The condition held from stamps[start] up to stamps[end] (exclusive); end None: still
    holding at the last sample evaluated."""

    start: float
    end: float | None
    peak: float


def runs(stamps: F64, condition: Bools, values: F64, step_s: float, hold_s: float) -> list[Run]:
    """Runs of `condition` lasting at least `hold_s`. A run ends at the first sample where
    the condition is false; a missing sample (NaN value) ends it too, since no data is not
    evidence of a problem continuing. `peak` is the extreme value (largest |value|) in the run."""
    out: list[Run] = []
    n = len(stamps)
    if n == 0:
        return out
    cond = condition & ~np.isnan(values)
    # A gap in the stamps also breaks a run.
    contiguous = np.ones(n, dtype=bool)
    contiguous[1:] = np.diff(stamps) <= step_s * 1.5
    edges = np.flatnonzero(np.diff(np.concatenate(([0], cond.astype(np.int8), [0]))))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        # Split the run where stamps jump.
        breaks = [a, *[int(i) for i in np.flatnonzero(~contiguous[a + 1:b]) + a + 1], b]
        for s, e in pairwise(breaks):
            duration = stamps[e - 1] - stamps[s] + step_s
            if duration < hold_s:
                continue
            seg = values[s:e]
            peak = float(seg[np.argmax(np.abs(seg))])
            # It ends at the next sample, where the condition stopped; after a gap, one step on.
            end: float | None = None
            if e < n:
                end = float(stamps[e]) if contiguous[e] else float(stamps[e - 1] + step_s)
            out.append(Run(float(stamps[s]), end, peak))
    return out


def robust_scores(values: F64, history: F64, min_points: int = 3) -> tuple[F64, F64]:
    """(baseline, score) per row: the median of each row of `history` (columns = the same
    weekday and hour in earlier weeks) and how many robust σ (MAD × 1.4826) `values` lies
    from it. Rows with fewer than `min_points` known values score NaN. A flat history (MAD 0)
    uses 5 % of the median as its spread, so that a constant load still has a scale."""
    known = np.sum(~np.isnan(history), axis=1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: scored NaN below
        median = np.nanmedian(history, axis=1) if history.size else np.full(len(values), np.nan)
        mad = np.nanmedian(np.abs(history - median[:, None]), axis=1) if history.size else median
        spread = np.maximum(MAD_TO_SIGMA * mad, 0.05 * np.abs(median))
        spread = np.where(spread > 0, spread, np.nan)
        score = (values - median) / spread
    score = np.where(known >= min_points, score, np.nan)
    return median, score


def starts_per_hour(stamps: F64, power_w: F64, on_w: float) -> tuple[F64, F64]:
    """(hour stamps, starts in each hour) from a 1-minute power series: a start is a step
    from below `on_w` to at or above it between two consecutive minutes."""
    if len(stamps) < 2:
        return np.zeros(0), np.zeros(0)
    on = power_w >= on_w
    adjacent = np.diff(stamps) <= 90.0
    start = (~on[:-1]) & on[1:] & adjacent & ~np.isnan(power_w[:-1]) & ~np.isnan(power_w[1:])
    hours = np.floor(stamps[1:] / 3600.0) * 3600.0
    first, last = hours[0], hours[-1]
    grid = np.arange(first, last + 3600.0, 3600.0)
    counts = np.bincount(((hours - first) // 3600.0).astype(np.int64), weights=start.astype(np.float64),
                         minlength=len(grid))
    return grid.astype(np.float64), counts.astype(np.float64)
