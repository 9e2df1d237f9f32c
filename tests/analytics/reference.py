"""A plain pandas/numpy reference for the Numba core, written a different way on purpose:
segments are cut at bucket edges found with np.interp, and each piece is given to the
bucket holding its midpoint."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def reference_buckets(series, ts, power, current, n_series, t0, bucket_s, n_buckets, gap_s):
    df = pd.DataFrame({"s": series, "t": ts, "p": power, "c": current})
    df = df.drop_duplicates(["s", "t"], keep="first").sort_values(["s", "t"], kind="stable")
    energy = np.zeros((n_series, n_buckets))
    covered = np.zeros((n_series, n_buckets))
    amp_s = np.zeros((n_series, n_buckets))
    max_p = np.full((n_series, n_buckets), -np.inf)
    samples = np.zeros((n_series, n_buckets), dtype=np.int64)
    edges = t0 + np.arange(n_buckets + 1) * bucket_s
    for s, g in df.groupby("s"):
        t = g["t"].to_numpy()
        p = g["p"].to_numpy()
        c = g["c"].to_numpy()
        b = np.floor((t - t0) / bucket_s).astype(int)
        inside = (b >= 0) & (b < n_buckets)
        np.add.at(samples[s], b[inside], 1)
        for k, value in zip(b[inside], p[inside], strict=True):
            max_p[s, k] = max(max_p[s, k], value)
        for i in range(len(t) - 1):
            dt = t[i + 1] - t[i]
            if not (0 < dt <= gap_s):
                continue
            cuts = edges[(edges > t[i]) & (edges < t[i + 1])]
            points = np.concatenate([[t[i]], cuts, [t[i + 1]]])
            pw = np.interp(points, [t[i], t[i + 1]], [p[i], p[i + 1]])
            cu = np.interp(points, [t[i], t[i + 1]], [c[i], c[i + 1]])
            for j in range(len(points) - 1):
                k = math.floor(((points[j] + points[j + 1]) / 2 - t0) / bucket_s)
                if not 0 <= k < n_buckets:
                    continue
                w = points[j + 1] - points[j]
                energy[s, k] += (pw[j] + pw[j + 1]) / 2 * w / 3600
                amp_s[s, k] += (cu[j] + cu[j + 1]) / 2 * w
                covered[s, k] += w
                max_p[s, k] = max(max_p[s, k], pw[j], pw[j + 1])
    return energy, covered, amp_s, max_p, samples
