"""Numba kernels: the hot loops of the analytics core.

Energy method: trapezoid, on signed power (a meter's reading may be negative, and its
energy then nets within a bucket). Power is taken as linear between two consecutive readings of
a sensor when they are at most `gap_s` apart; a longer gap is not bridged, so it adds no
energy and no coverage. A segment that crosses a bucket edge is split at the edge by
linear interpolation, so each bucket gets exactly the energy inside it.

All kernels use `cache=True`: the compiled code is kept on disk (__pycache__) and a
restart does not pay the JIT again.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@numba.njit(cache=True, nogil=True)
def power_w(current_a: F64, voltage_v: F64, power_factor: F64, default_v: F64,
            default_pf: F64, measured_w: F64) -> F64:
    """P = V × I × PF per reading; a measured voltage or power factor (not NaN) wins, and a
    meter's own power (not NaN, signed) wins over all three."""
    n = current_a.shape[0]
    out = np.empty(n)
    for i in range(n):
        if not math.isnan(measured_w[i]):
            out[i] = measured_w[i]
            continue
        v = voltage_v[i]
        if math.isnan(v):
            v = default_v[i]
        pf = power_factor[i]
        if math.isnan(pf):
            pf = default_pf[i]
        out[i] = v * current_a[i] * pf
    return out


@numba.njit(cache=True, nogil=True)
def integrate_buckets(series: I64, ts: F64, power: F64, current: F64, n_series: int, t0: float,
                      bucket_s: float, n_buckets: int, gap_s: float
                      ) -> tuple[F64, F64, F64, F64, I64]:
    """Per (series, bucket): energy (Wh), covered seconds, current integral (A·s),
    max power (W) and sample count. Input sorted by (series, ts) without duplicates."""
    energy = np.zeros((n_series, n_buckets))
    covered = np.zeros((n_series, n_buckets))
    amp_s = np.zeros((n_series, n_buckets))
    max_p = np.full((n_series, n_buckets), -np.inf)
    samples = np.zeros((n_series, n_buckets), dtype=np.int64)
    n = ts.shape[0]
    for i in range(n):
        s = series[i]
        t = ts[i]
        p = power[i]
        b = math.floor((t - t0) / bucket_s)
        if 0 <= b < n_buckets:
            samples[s, b] += 1
            if p > max_p[s, b]:
                max_p[s, b] = p
        if i + 1 >= n or series[i + 1] != s:
            continue
        t2 = ts[i + 1]
        dt = t2 - t
        if dt <= 0.0 or dt > gap_s:
            continue
        p2 = power[i + 1]
        c = current[i]
        c2 = current[i + 1]
        a = t
        while a < t2:
            edge = t0 + (b + 1) * bucket_s
            e = edge if edge < t2 else t2
            if 0 <= b < n_buckets:
                fa = (a - t) / dt
                fe = (e - t) / dt
                pa = p + (p2 - p) * fa
                pe = p + (p2 - p) * fe
                w = e - a
                energy[s, b] += 0.5 * (pa + pe) * w / 3600.0
                amp_s[s, b] += 0.5 * ((c + (c2 - c) * fa) + (c + (c2 - c) * fe)) * w
                covered[s, b] += w
                if pa > max_p[s, b]:
                    max_p[s, b] = pa
                if pe > max_p[s, b]:
                    max_p[s, b] = pe
            a = e
            b += 1
    return energy, covered, amp_s, max_p, samples


@numba.njit(cache=True, nogil=True)
def roll_up_tree(parent: I64, has_sensor: npt.NDArray[np.bool_],
                 own: F64) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
    """Node totals for one quantity over a tree in topological order (parents first).

    `own[n, k]` is node n's measured value (its sensors), used where `has_sensor[n, k]`:
    a node is measured in the columns (minutes) in which a sensor was assigned to it, so a
    panel whose meter was moved away is the sum of its children from then on. A node's
    total is its own measurement where it has one, else the sum of its children. The
    unmonitored remainder, where a measured node has children with data, is own − Σ children.
    Returns (total, remainder (NaN where undefined), has_data), each per node and column."""
    n, k = own.shape
    child_sum = np.zeros((n, k))
    has_child_data = np.zeros((n, k), dtype=np.bool_)
    total = np.zeros((n, k))
    remainder = np.full((n, k), np.nan)
    has_data = np.zeros((n, k), dtype=np.bool_)
    for j in range(n - 1, -1, -1):
        p = parent[j]
        for c in range(k):
            if has_sensor[j, c]:
                total[j, c] = own[j, c]
                has_data[j, c] = True
                if has_child_data[j, c]:
                    remainder[j, c] = own[j, c] - child_sum[j, c]
            elif has_child_data[j, c]:
                total[j, c] = child_sum[j, c]
                has_data[j, c] = True
            if p >= 0 and has_data[j, c]:
                child_sum[p, c] += total[j, c]
                has_child_data[p, c] = True
    return total, remainder, has_data


@numba.njit(cache=True, nogil=True)
def roll_up_balance(parent: I64, measured: npt.NDArray[np.bool_], signed: npt.NDArray[np.bool_],
                    generation: npt.NDArray[np.bool_], own_c: F64, own_g: F64
                    ) -> tuple[F64, F64, F64, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Consumption and generation over a tree in topological order (parents first), apart.

    `own_c`, `own_g` are a measured node's own consumption and generation. A clamp's node
    is one or the other by its flow: a consuming node's total consumption is its own (its
    remainder own − Σ children's consumption) and its generation its children's; a
    generating node's totals are its own. A signed meter (`signed`) on a consuming node
    reads the subtree's net N = own_c − own_g: what its children's net does not explain,
    U = N − (C_children − G_children), is its remainder, unmonitored consumption where
    positive and unmonitored generation where negative. Returns (consumption, generation,
    remainder (NaN where undefined), has consumption, has generation) per node and column."""
    n, k = own_c.shape
    child_c = np.zeros((n, k))
    child_g = np.zeros((n, k))
    has_child_c = np.zeros((n, k), dtype=np.bool_)
    has_child_g = np.zeros((n, k), dtype=np.bool_)
    total_c = np.zeros((n, k))
    total_g = np.zeros((n, k))
    remainder = np.full((n, k), np.nan)
    has_c = np.zeros((n, k), dtype=np.bool_)
    has_g = np.zeros((n, k), dtype=np.bool_)
    for j in range(n - 1, -1, -1):
        p = parent[j]
        for c in range(k):
            if measured[j, c] and generation[j]:
                total_c[j, c] = own_c[j, c]
                total_g[j, c] = own_g[j, c]
                has_c[j, c] = signed[j, c]
                has_g[j, c] = True
            elif measured[j, c] and signed[j, c]:
                u = (own_c[j, c] - own_g[j, c]) - (child_c[j, c] - child_g[j, c])
                total_c[j, c] = child_c[j, c] + max(u, 0.0)
                total_g[j, c] = child_g[j, c] + max(-u, 0.0)
                if has_child_c[j, c] or has_child_g[j, c]:
                    remainder[j, c] = u
                has_c[j, c] = True
                has_g[j, c] = True
            elif measured[j, c]:
                total_c[j, c] = own_c[j, c]
                total_g[j, c] = child_g[j, c]
                if has_child_c[j, c]:
                    remainder[j, c] = own_c[j, c] - child_c[j, c]
                has_c[j, c] = True
                has_g[j, c] = has_child_g[j, c]
            else:
                total_c[j, c] = child_c[j, c]
                total_g[j, c] = child_g[j, c]
                has_c[j, c] = has_child_c[j, c]
                has_g[j, c] = has_child_g[j, c]
            if p >= 0:
                if has_c[j, c]:
                    child_c[p, c] += total_c[j, c]
                    has_child_c[p, c] = True
                if has_g[j, c]:
                    child_g[p, c] += total_g[j, c]
                    has_child_g[p, c] = True
    return total_c, total_g, remainder, has_c, has_g
