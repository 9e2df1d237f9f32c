"""The Numba core equals the reference on random inputs: gaps, duplicates, disorder."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.rollup import bucket_stats, readings_power, sort_dedup
from tests.analytics.reference import reference_buckets

T0 = 1_774_742_400.0  # 2026-03-29 00:00 UTC, a DST day in Europe


@st.composite
def reading_sets(draw):
    n_series = draw(st.integers(1, 4))
    n = draw(st.integers(0, 80))
    # Times on a coarse grid (so duplicates happen) with some fractional jitter, some
    # before and after the bucket range, in random order.
    grid = draw(st.lists(st.integers(-20, 400), min_size=n, max_size=n))
    jitter = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 3.7]), min_size=n, max_size=n))
    series = draw(st.lists(st.integers(0, n_series - 1), min_size=n, max_size=n))
    power = draw(st.lists(st.floats(0, 50_000, allow_nan=False), min_size=n, max_size=n))
    ts = T0 + np.array(grid, dtype=float) * 5.0 + np.array(jitter)
    return (np.array(series, dtype=np.int64), ts, np.array(power, dtype=float), n_series,
            draw(st.sampled_from([60.0, 900.0])), draw(st.sampled_from([25.0, 30.0, 95.0])))


@settings(max_examples=300, deadline=None)
@given(reading_sets())
def test_bucket_stats_equal_reference(case):
    series, ts, power, n_series, bucket_s, gap_s = case
    current = power / 230.0
    n_buckets = int(2000 // bucket_s) + 1
    got = bucket_stats(series, ts, power, current, n_series, T0, bucket_s, n_buckets, gap_s)
    want = reference_buckets(series, ts, power, current, n_series, T0, bucket_s, n_buckets, gap_s)
    for name, g, w in zip(("energy", "covered", "amp_s", "max_p", "samples"),
                          (got.energy_wh, got.covered_s, got.amp_s, got.max_power_w, got.samples), want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9, err_msg=name)


@settings(max_examples=100, deadline=None)
@given(reading_sets())
def test_energy_is_independent_of_order_and_resends(case):
    series, ts, _, n_series, bucket_s, gap_s = case
    # A resend repeats the same values, so the power here is a function of (sensor, time).
    power = (series * 7919.0 + ts * 13.0) % 5000.0
    rng = np.random.default_rng(len(ts))
    order = rng.permutation(len(ts))
    doubled = np.concatenate([order, order[: len(order) // 2]])
    a = bucket_stats(series, ts, power, power, n_series, T0, bucket_s, 40, gap_s)
    b = bucket_stats(series[doubled], ts[doubled], power[doubled], power[doubled], n_series, T0, bucket_s, 40, gap_s)
    np.testing.assert_allclose(a.energy_wh, b.energy_wh, rtol=1e-12, atol=1e-12)


def test_gap_longer_than_limit_is_not_bridged():
    ts = np.array([T0, T0 + 10, T0 + 100, T0 + 110])
    p = np.full(4, 3600.0)
    stats = bucket_stats(np.zeros(4, dtype=np.int64), ts, p, p, 1, T0, 60.0, 2, 30.0)
    # 10 s in the first minute and 10 s in the second: 3600 W × 10 s = 10 Wh each.
    np.testing.assert_allclose(stats.energy_wh[0], [10.0, 10.0])
    np.testing.assert_allclose(stats.coverage[0], [10 / 60, 10 / 60])


def test_segment_split_at_bucket_edge_by_interpolation():
    # 0 W at 50 s rising to 1200 W at 70 s: 10 s at mean 300 W before the edge, 10 s at 900 W after.
    ts = np.array([T0 + 50, T0 + 70])
    p = np.array([0.0, 1200.0])
    stats = bucket_stats(np.zeros(2, dtype=np.int64), ts, p, p, 1, T0, 60.0, 2, 30.0)
    np.testing.assert_allclose(stats.energy_wh[0], [300 * 10 / 3600, 900 * 10 / 3600])
    np.testing.assert_allclose(stats.max_power_w[0], [600.0, 1200.0])


def test_power_uses_measured_voltage_and_pf_over_defaults():
    current = np.array([10.0, 10.0, 10.0])
    volts = np.array([np.nan, 240.0, np.nan])
    pf = np.array([np.nan, np.nan, 0.5])
    p = readings_power(current, volts, pf, np.full(3, 230.0), np.full(3, 0.9))
    np.testing.assert_allclose(p, [2070.0, 2160.0, 1150.0])


def test_sort_dedup_keeps_first_of_duplicates():
    s, t, (v,) = sort_dedup(np.array([1, 0, 1]), np.array([5.0, 9.0, 5.0]), np.array([1.0, 2.0, 3.0]))
    assert list(s) == [0, 1] and list(t) == [9.0, 5.0] and list(v) == [2.0, 1.0]
