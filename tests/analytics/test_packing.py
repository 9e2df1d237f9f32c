"""The packed codec is lossless for what is stored: microsecond timestamps and float32 values,
bit for bit, with gaps in time, optional columns present, absent or partly present, edge
values (±0, subnormals, the largest float32, infinities), out-of-order input and duplicate
timestamps; a damaged row is refused, never read as zeros."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from wattline.packing import CorruptPack, Readings, pack, prepare, unpack

EDGES = [0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38, 3.4028235e38, -3.4028235e38, float("inf"), float("-inf"), 12.345,
         230.1, 0.95, -71.5]
floats = st.one_of(st.sampled_from(EDGES), st.floats(width=32, allow_nan=False))


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(n=st.integers(0, 200), data=st.data())
def test_round_trip_is_bit_exact(n: int, data: st.DataObject) -> None:
    ts = data.draw(hnp.arrays(np.int64, n, elements=st.integers(-(2 ** 50), 2 ** 50)))
    current = data.draw(hnp.arrays(np.float32, n, elements=floats))
    optional = []
    for _ in range(4):  # voltage, power factor, RSSI, a meter's signed power
        mode = data.draw(st.sampled_from(["absent", "full", "gaps"]))
        values = data.draw(hnp.arrays(np.float32, n, elements=floats))
        if mode == "absent":
            values = np.full(n, np.nan, np.float32)
        elif mode == "gaps":
            values[data.draw(hnp.arrays(bool, n))] = np.nan
        optional.append(values)
    readings = prepare(ts, current, *optional)  # out of order, duplicates: sorted, the first kept
    back = unpack(pack(readings))
    assert np.array_equal(back.ts_us, readings.ts_us)
    for name in ("current_a", "voltage_v", "power_factor", "rssi_dbw", "power_w"):
        assert same(getattr(back, name), getattr(readings, name)), name


def test_prepare_keeps_the_first_of_a_duplicate_and_sorts() -> None:
    r = prepare(np.array([30, 10, 20, 10]), np.array([3.0, 1.0, 2.0, 9.0], np.float32))
    assert r.ts_us.tolist() == [10, 20, 30] and r.current_a.tolist() == [1.0, 2.0, 3.0]


def test_realistic_profiles_pack_under_four_bytes_a_reading() -> None:
    rng = np.random.default_rng(7)
    n = 8640  # a day at 10 s
    ts = 1_796_000_000_000_000 + np.arange(n, dtype=np.int64) * 10_000_000
    current = np.round(np.maximum(12 + 3 * np.sin(np.arange(n) / 500) + rng.normal(0, 0.05, n), 0), 3)
    rssi = np.round(rng.normal(-72, 3, n), 1)
    packed = pack(prepare(ts, current.astype(np.float32), rssi_dbw=rssi.astype(np.float32)))
    assert len(packed) / n <= 4.0


@pytest.mark.parametrize("where", [0, 5, 40, -1])
def test_a_damaged_row_is_refused(where: int) -> None:
    r = prepare(np.arange(100, dtype=np.int64) * 10_000_000, np.linspace(0, 10, 100, dtype=np.float32))
    packed = bytearray(pack(r))
    packed[where] ^= 0x5A
    with pytest.raises(CorruptPack):
        unpack(bytes(packed))
    with pytest.raises(CorruptPack):
        unpack(bytes(packed[:30]))


def test_an_unsorted_row_is_refused_at_packing() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        pack(Readings(np.array([2, 1], np.int64), *(np.zeros(2, np.float32) for _ in range(5))))


def test_a_clamps_row_keeps_format_1_and_a_meters_row_reads_back_signed() -> None:
    """Rows without power keep the bytes of format 1 (every row packed before migration 037
    reads as it did); a meter's row is format 2 and keeps its sign."""
    ts = np.arange(6, dtype=np.int64) * 10_000_000
    amps = np.full(6, 10.0, np.float32)
    assert pack(prepare(ts, amps))[:3] == b"WP1"
    power = np.array([2300.0, 1200.5, -50.0, -4100.25, np.nan, 0.0], np.float32)
    packed = pack(prepare(ts, amps, power_w=power))
    assert packed[:3] == b"WP2"
    assert same(unpack(packed).power_w, power)
    assert np.isnan(unpack(pack(prepare(ts, amps))).power_w).all()
