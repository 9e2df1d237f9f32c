"""The packed codec for raw readings: one sensor's readings over a period as one byte string,
lossless for what is stored (microsecond timestamps, float32 values), checked by a CRC-32.

Timestamps are delta-of-delta, zigzag, in Gorilla-style variable-length buckets (a bridge
that reports every 10 s on the dot costs one bit a reading). Each value column (current,
and voltage, power factor, RSSI and a meter's power where present) takes the smaller of two encodings:

- quantised delta: when every value is a decimal of at most 6 places that float32 keeps
  exactly (a bridge's 12.345 A), the integers' deltas go through the same buckets;
- XOR (Gorilla): each float32's bits XOR the previous one's, leading and trailing zeros
  dropped, the previous window reused when the new bits fit in it.

A column that has no value at all is absent; one with some gaps carries a bitmap of where
values are. Numba kernels do the bit work; Python assembles the blocks.

Layout: b"WP1" | crc32 u32 (of everything after it) | n u32 | t0 i64 | ts block | 4 columns.
Format 2 (b"WP2", migration 037) adds a fifth column, a meter's signed power; a row is
written as WP1 when it has none, so a clamp's rows keep their bytes, and both read.
A block is: encoding u8 (0 absent, 1 xor, 2 quantised delta) | scale exponent u8 |
has-gaps u8 | [bitmap] | payload length u32 | payload.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

MAGIC = b"WP1"
MAGIC_2 = b"WP2"
COLUMNS = ("current_a", "voltage_v", "power_factor", "rssi_dbw")
COLUMNS_2 = (*COLUMNS, "power_w")
ABSENT, XOR, QDELTA = 0, 1, 2
MAX_DECIMALS = 6
#: Bucket widths for zigzagged integers, by prefix '0', '10', '110', …, '111111'.
_WIDTHS = np.array([0, 8, 12, 16, 24, 32, 64], dtype=np.int64)

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


class CorruptPack(ValueError):
    """A packed row whose checksum or structure does not hold: it is never read as data."""


@dataclass(frozen=True)
class Readings:
    """One sensor's readings, oldest first, timestamps unique (microseconds since the epoch).
    Optional columns are NaN where a reading has no value."""

    ts_us: I64
    current_a: F32
    voltage_v: F32
    power_factor: F32
    rssi_dbw: F32
    power_w: F32

    def __len__(self) -> int:
        return len(self.ts_us)


# -- bit streams ---------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _put(out: U8, pos: int, value: np.uint64, nbits: int) -> int:
    """Write the low `nbits` of `value`, most significant first, at bit `pos`."""
    for i in range(nbits - 1, -1, -1):
        if (value >> np.uint64(i)) & np.uint64(1):
            out[pos >> 3] |= np.uint8(0x80 >> (pos & 7))
        pos += 1
    return pos


@numba.njit(cache=True, nogil=True)
def _get(data: U8, pos: int, nbits: int) -> tuple[np.uint64, int]:
    value = np.uint64(0)
    for _ in range(nbits):
        bit = (data[pos >> 3] >> np.uint8(7 - (pos & 7))) & np.uint8(1)
        value = (value << np.uint64(1)) | np.uint64(bit)
        pos += 1
    return value, pos


@numba.njit(cache=True, nogil=True)
def _zigzag(v: np.int64) -> np.uint64:
    return np.uint64((v << np.int64(1)) ^ (v >> np.int64(63)))


@numba.njit(cache=True, nogil=True)
def _unzigzag(u: np.uint64) -> np.int64:
    return np.int64(u >> np.uint64(1)) ^ -np.int64(u & np.uint64(1))


@numba.njit(cache=True, nogil=True)
def encode_ints(values: I64, widths: I64) -> U8:
    """Zigzagged integers in prefix-coded buckets."""
    out = np.zeros(len(values) * 9 + 8, dtype=np.uint8)
    pos = 0
    for v in values:
        z = _zigzag(v)
        k = 0
        while k < len(widths) - 1 and (widths[k] < 64 and z >= (np.uint64(1) << np.uint64(widths[k]))):
            k += 1
        pos = _put(out, pos, np.uint64((1 << (k + 1)) - 2) if k < len(widths) - 1 else np.uint64((1 << k) - 1),
                   k + 1 if k < len(widths) - 1 else k)
        if widths[k]:
            pos = _put(out, pos, z, widths[k])
    return out[:(pos + 7) >> 3]


@numba.njit(cache=True, nogil=True)
def decode_ints(data: U8, n: int, widths: I64) -> I64:
    """`n` integers that `encode_ints` wrote."""
    out = np.empty(n, dtype=np.int64)
    pos = 0
    last = len(widths) - 1
    for i in range(n):
        k = 0
        while k < last:
            bit, pos = _get(data, pos, 1)
            if bit == 0:
                break
            k += 1
        z = np.uint64(0)
        if widths[k]:
            z, pos = _get(data, pos, widths[k])
        out[i] = _unzigzag(z)
    return out


@numba.njit(cache=True, nogil=True)
def encode_xor(bits: npt.NDArray[np.uint32]) -> U8:
    """Gorilla's XOR encoding of 32-bit words (the first one whole)."""
    out = np.zeros(len(bits) * 6 + 8, dtype=np.uint8)
    pos = 0
    if len(bits) == 0:
        return out[:0]
    pos = _put(out, pos, np.uint64(bits[0]), 32)
    prev = bits[0]
    lead_w, trail_w = 33, 0  # no window yet
    for i in range(1, len(bits)):
        x = np.uint32(bits[i] ^ prev)
        prev = bits[i]
        if x == 0:
            pos = _put(out, pos, np.uint64(0), 1)
            continue
        lead = 0
        while lead < 32 and not (x >> np.uint32(31 - lead)) & np.uint32(1):
            lead += 1
        trail = 0
        while trail < 32 and not (x >> np.uint32(trail)) & np.uint32(1):
            trail += 1
        if lead >= lead_w and trail >= trail_w and lead_w <= 32:
            pos = _put(out, pos, np.uint64(2), 2)  # '10': inside the previous window
            pos = _put(out, pos, np.uint64(x >> np.uint32(trail_w)), 32 - lead_w - trail_w)
        else:
            lead = min(lead, 31)
            length = 32 - lead - trail
            pos = _put(out, pos, np.uint64(3), 2)  # '11': a new window
            pos = _put(out, pos, np.uint64(lead), 5)
            pos = _put(out, pos, np.uint64(length - 1), 5)
            pos = _put(out, pos, np.uint64(x >> np.uint32(trail)), length)
            lead_w, trail_w = lead, trail
    return out[:(pos + 7) >> 3]


@numba.njit(cache=True, nogil=True)
def decode_xor(data: U8, n: int) -> npt.NDArray[np.uint32]:
    """`n` words that `encode_xor` wrote."""
    out = np.empty(n, dtype=np.uint32)
    if n == 0:
        return out
    first, pos = _get(data, 0, 32)
    out[0] = np.uint32(first)
    lead_w, trail_w = 0, 0
    for i in range(1, n):
        bit, pos = _get(data, pos, 1)
        if bit == 0:
            out[i] = out[i - 1]
            continue
        bit, pos = _get(data, pos, 1)
        if bit == 1:
            lead, pos = _get(data, pos, 5)
            length, pos = _get(data, pos, 5)
            lead_w, trail_w = int(lead), 32 - int(lead) - (int(length) + 1)
        meaningful, pos = _get(data, pos, 32 - lead_w - trail_w)
        out[i] = out[i - 1] ^ np.uint32(meaningful << np.uint64(trail_w))
    return out


# -- columns -------------------------------------------------------------------------------------
def _decimals(values: F32) -> int | None:
    """The fewest decimal places that give every value back exactly as float32, if any ≤ 6."""
    if np.any((values == 0) & np.signbit(values)):
        return None  # -0.0 is not an integer's decimal: only XOR keeps its sign
    as64 = values.astype(np.float64)
    for k in range(MAX_DECIMALS + 1):
        scaled = np.round(as64 * 10.0 ** k)
        if np.abs(scaled).max(initial=0.0) >= 2 ** 52:
            return None
        if np.array_equal((scaled / 10.0 ** k).astype(np.float32).view(np.uint32), values.view(np.uint32)):
            return k
    return None


def _pack_column(values: F32) -> bytes:
    present = ~np.isnan(values)
    if not present.any():
        return bytes([ABSENT, 0, 0])
    gaps = not present.all()
    head = bitmap = b""
    kept = np.ascontiguousarray(values[present], dtype=np.float32)
    if gaps:
        bitmap = np.packbits(present).tobytes()
    best, scale, payload = XOR, 0, b""
    k = _decimals(kept)
    if k is not None:
        ints = np.round(kept.astype(np.float64) * 10.0 ** k).astype(np.int64)
        deltas = np.diff(ints, prepend=np.int64(0))
        best, scale, payload = QDELTA, k, encode_ints(deltas, _WIDTHS).tobytes()
    # XOR is tried only where quantised deltas are not already small: it seldom beats two
    # bytes a value, and skipping it keeps packing fast.
    if best == XOR or len(payload) > 2 * len(kept):
        xor = encode_xor(kept.view(np.uint32)).tobytes()
        if best == XOR or len(xor) < len(payload):
            best, scale, payload = XOR, 0, xor
    head = bytes([best, scale, int(gaps)])
    return head + bitmap + struct.pack("<I", len(payload)) + payload


def _unpack_column(data: memoryview, pos: int, n: int) -> tuple[F32, int]:
    kind, scale, gaps = data[pos], data[pos + 1], data[pos + 2]
    pos += 3
    out = np.full(n, np.nan, dtype=np.float32)
    if kind == ABSENT:
        return out, pos
    present = np.ones(n, dtype=bool)
    if gaps:
        size = (n + 7) // 8
        present = np.unpackbits(np.frombuffer(data[pos:pos + size], dtype=np.uint8), count=n).astype(bool)
        pos += size
    (length,) = struct.unpack_from("<I", data, pos)
    pos += 4
    payload = np.frombuffer(data[pos:pos + length], dtype=np.uint8)
    pos += length
    count = int(present.sum())
    if kind == XOR:
        out[present] = decode_xor(payload, count).view(np.float32)
    elif kind == QDELTA:
        ints = np.cumsum(decode_ints(payload, count, _WIDTHS))
        out[present] = (ints.astype(np.float64) / 10.0 ** scale).astype(np.float32)
    else:
        raise CorruptPack(f"unknown column encoding {kind}")
    return out, pos


# -- whole rows ----------------------------------------------------------------------------------
def pack(readings: Readings) -> bytes:
    """One packed row (the caller has sorted by time and removed duplicate timestamps)."""
    ts = np.ascontiguousarray(readings.ts_us, dtype=np.int64)
    n = len(ts)
    if n and np.any(np.diff(ts) <= 0):
        raise ValueError("timestamps must be strictly increasing")
    t0 = int(ts[0]) if n else 0
    deltas = np.diff(ts, prepend=np.int64(t0))
    dod = np.diff(deltas, prepend=np.int64(0))
    ts_block = encode_ints(dod, _WIDTHS).tobytes()
    signed = not np.isnan(np.asarray(readings.power_w, dtype=np.float32)).all()
    body = struct.pack("<Iq", n, t0) + struct.pack("<I", len(ts_block)) + ts_block + b"".join(
        _pack_column(np.asarray(getattr(readings, c), dtype=np.float32)) for c in (COLUMNS_2 if signed else COLUMNS))
    return (MAGIC_2 if signed else MAGIC) + struct.pack("<I", zlib.crc32(body)) + body


def verify(data: bytes | memoryview) -> memoryview:
    """The row's bytes if its magic and checksum hold; `CorruptPack` if not."""
    view = memoryview(data)
    if len(view) < 23 or bytes(view[:3]) not in (MAGIC, MAGIC_2):
        raise CorruptPack("not a packed row")
    (crc,) = struct.unpack_from("<I", view, 3)
    if zlib.crc32(view[7:]) != crc:
        raise CorruptPack("checksum mismatch")
    return view


def unpack(data: bytes | memoryview) -> Readings:
    """The readings of a packed row; `CorruptPack` if its checksum or structure fails."""
    view = verify(data)
    try:
        n, t0 = struct.unpack_from("<Iq", view, 7)
        (length,) = struct.unpack_from("<I", view, 19)
        pos = 23
        dod = decode_ints(np.frombuffer(view[pos:pos + length], dtype=np.uint8), n, _WIDTHS)
        pos += length
        ts = t0 + np.cumsum(np.cumsum(dod))
        columns = []
        for _ in COLUMNS_2 if bytes(view[:3]) == MAGIC_2 else COLUMNS:
            values, pos = _unpack_column(view, pos, n)
            columns.append(values)
    except (struct.error, IndexError, ValueError) as exc:
        raise CorruptPack(f"malformed packed row ({type(exc).__name__})") from exc
    if len(columns) < len(COLUMNS_2):
        columns.append(np.full(n, np.nan, dtype=np.float32))
    return Readings(ts.astype(np.int64), *columns)


def prepare(ts_us: I64, current_a: F32, voltage_v: F32 | None = None, power_factor: F32 | None = None,
            rssi_dbw: F32 | None = None, power_w: F32 | None = None) -> Readings:
    """Readings as they come (any order, a timestamp possibly twice): sorted by time, the first
    of each timestamp kept, as the readings table's unique index keeps the first one stored."""
    n = len(ts_us)
    missing = np.full(n, np.nan, dtype=np.float32)
    columns = [np.asarray(c, dtype=np.float32) if c is not None else missing
               for c in (current_a, voltage_v, power_factor, rssi_dbw, power_w)]
    order = np.argsort(np.asarray(ts_us, dtype=np.int64), kind="stable")
    ts = np.asarray(ts_us, dtype=np.int64)[order]
    first = np.ones(n, dtype=bool)
    first[1:] = ts[1:] != ts[:-1]
    return Readings(ts[first], *(c[order][first] for c in columns))
