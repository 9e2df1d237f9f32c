"""Numba core against pandas on the same data in the same run: the 1-minute rollup and
tariff costing, at 1 M and 10 M readings, and the JIT's first-call cost."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from datetime import time as dtime
from decimal import Decimal
from functools import partial

import numpy as np
import pandas as pd

from analytics.rollup import bucket_stats
from analytics.tariffs import TariffVersion, interval_costs, local_calendar, rate_table
from bench.common import Row, best_of
from wattline.tariffs import Band

T0 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
GAP = 30.0


def synthetic(n: int, sensors: int = 1000, seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sensors reporting every ~10 s with jitter and 1 % dropped readings, sorted."""
    rng = np.random.default_rng(seed)
    per = n // sensors
    series = np.repeat(np.arange(sensors, dtype=np.int64), per)
    ts = T0 + np.tile(np.arange(per) * 10.0, sensors) + rng.uniform(0, 0.5, per * sensors)
    keep = rng.random(per * sensors) > 0.01
    power = rng.uniform(0, 5000, per * sensors)
    return series[keep], ts[keep], power[keep]


def pandas_minute_rollup(series: np.ndarray, ts: np.ndarray, power: np.ndarray, bucket_s: float = 60.0
                         ) -> pd.Series:
    """Vectorised pandas: trapezoids between neighbours, split at most once at a bucket edge
    (true whenever the gap limit is shorter than a bucket), summed per (sensor, bucket)."""
    df = pd.DataFrame({"s": series, "t": ts, "p": power})
    nxt = df.groupby("s", sort=False)[["t", "p"]].shift(-1)
    dt = nxt["t"] - df["t"]
    ok = (dt > 0) & (dt <= GAP)
    seg = df[ok].assign(t2=nxt["t"][ok], p2=nxt["p"][ok], dt=dt[ok])
    b = np.floor((seg["t"] - T0) / bucket_s)
    edge = T0 + (b + 1) * bucket_s
    cut = np.minimum(edge, seg["t2"])
    p_cut = seg["p"] + (seg["p2"] - seg["p"]) * (cut - seg["t"]) / seg["dt"]
    first = (seg["p"] + p_cut) / 2 * (cut - seg["t"]) / 3600
    second = (p_cut + seg["p2"]) / 2 * (seg["t2"] - cut) / 3600
    parts = pd.concat([pd.DataFrame({"s": seg["s"], "b": b, "e": first}),
                       pd.DataFrame({"s": seg["s"], "b": b + 1, "e": second})])
    return parts.groupby(["s", "b"])["e"].sum()


def rollup_rows() -> list[Row]:
    rows = []
    for n in (1_000_000, 10_000_000):
        series, ts, power = synthetic(n)
        sensors = int(series.max()) + 1
        n_buckets = int((ts.max() - T0) // 60) + 2
        bucket_stats(series[:1000], ts[:1000], power[:1000], power[:1000], sensors, T0, 60.0, n_buckets, GAP,
                     presorted=True)  # compiled (or loaded from cache) before timing
        args = (series, ts, power, power, sensors, T0, 60.0, n_buckets, GAP)
        numba_s = best_of(partial(bucket_stats, *args, presorted=True))
        numba_sort_s = best_of(partial(bucket_stats, *args))
        pandas_s = best_of(partial(pandas_minute_rollup, series, ts, power), repeat=1 if n > 2e6 else 2)
        # The two agree (same data, same run).
        got = bucket_stats(series, ts, power, power, sensors, T0, 60.0, n_buckets, GAP, presorted=True)
        ref = pandas_minute_rollup(series, ts, power)
        assert np.isclose(got.energy_wh.sum(), ref.sum(), rtol=1e-9)
        label = f"{n // 1_000_000} M readings"
        rows += [
            Row("rollup 1-min", f"numba, sorted input, {label}", n / numba_s, "readings/s"),
            Row("rollup 1-min", f"numba incl. sort+dedup, {label}", n / numba_sort_s, "readings/s"),
            Row("rollup 1-min", f"pandas reference, {label}", n / pandas_s, "readings/s"),
            Row("rollup 1-min", f"numba / pandas, {label}", pandas_s / numba_s, "×", "target ≥ 10×"),
        ]
    return rows


def tariff_rows() -> list[Row]:
    bands = (Band("night", Decimal("14.5"), ("weekday", "weekend", "holiday"), dtime(0), dtime(7)),
             Band("day", Decimal("28.62"), ("weekday",), dtime(7), dtime(0)),
             Band("weekend", Decimal("22"), ("weekend", "holiday"), dtime(7), dtime(0)))
    versions = [TariffVersion(i, "t", "GBP", datetime(2020 + i, 1, 1, tzinfo=UTC), Decimal(0), Decimal(0), 30,
                              Decimal(0), bands) for i in range(3)]
    table = rate_table(versions)
    rows = []
    for n in (1_000_000, 10_000_000):
        ts = np.asarray(datetime(2021, 6, 1, tzinfo=UTC).timestamp() + np.arange(n) * 900.0 % (4 * 365 * 86400),
                        dtype=np.float64)
        wh = np.random.default_rng(1).uniform(0, 3000, n)
        cal = local_calendar(ts, "Europe/London", "GB")
        interval_costs(ts[:10], wh[:10], table, local_calendar(ts[:10], "Europe/London", "GB"))
        numba_s = best_of(partial(interval_costs, ts, wh, table, cal))
        calendar_s = best_of(partial(local_calendar, ts, "Europe/London", "GB"), repeat=1)

        def pandas_cost(t=ts, w=wh, c=cal) -> float:
            df = pd.DataFrame({"t": t, "wh": w, "day": c.day_type, "slot": c.slot})
            df["v"] = np.searchsorted(table.valid_from, t, side="right") - 1
            lut = pd.DataFrame([(v, d, s, table.rates[v, d, s]) for v in range(table.rates.shape[0])
                                for d in range(3) for s in range(96)], columns=["v", "day", "slot", "rate"])
            merged = df.merge(lut, on=["v", "day", "slot"], how="left")
            return float((merged["wh"] / 1000 * merged["rate"]).sum())

        pandas_s = best_of(pandas_cost, repeat=1 if n > 2e6 else 2)
        assert np.isclose(interval_costs(ts, wh, table, cal)[0].sum(), pandas_cost(), rtol=1e-9)
        label = f"{n // 1_000_000} M intervals"
        rows += [
            Row("tariff costing", f"numba rate lookup, {label}", n / numba_s, "intervals/s"),
            Row("tariff costing", f"local calendar (pandas+holidays), {label}", n / calendar_s, "intervals/s",
                "shared by both"),
            Row("tariff costing", f"pandas merge reference, {label}", n / pandas_s, "intervals/s"),
            Row("tariff costing", f"numba / pandas, {label}", pandas_s / numba_s, "×"),
        ]
    return rows


JIT_PROBE = """
import time, numpy as np
t = time.perf_counter()
from analytics.rollup import bucket_stats
bucket_stats(np.zeros(3, dtype=np.int64), np.arange(3.0), np.ones(3), np.ones(3), 1, 0.0, 60.0, 1, 30.0)
print(time.perf_counter() - t)
"""


def jit_rows() -> list[Row]:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = [float(subprocess.run([sys.executable, "-c", JIT_PROBE], env=env, capture_output=True, text=True,
                                     check=True).stdout) for _ in range(2)]
    return [Row("jit", "first call, cold cache (import + compile)", runs[0], "s"),
            Row("jit", "first call after restart (cache=True)", runs[1], "s", f"{runs[0] / runs[1]:.0f}× faster")]


def run() -> list[Row]:
    started = time.perf_counter()
    rows = rollup_rows() + tariff_rows() + jit_rows()
    rows.append(Row("rollup", "bench wall time", time.perf_counter() - started, "s"))
    return rows
