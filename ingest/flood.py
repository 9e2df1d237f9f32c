"""Each bridge's share of the gateway: a token bucket per bridge, in payload bytes.

A bridge that floods (a firmware loop, a resend storm, a hostile device with a stolen
credential) would otherwise take the gateway's whole decoding budget and delay every other
bridge's readings. Bytes, not packs or readings: they are known before a pack is decoded,
and decoding is what a flood costs us. The burst is large on purpose: a bridge back from
an outage sends its backlog at once, and that is not a flood.
"""

from __future__ import annotations

import time


class BridgeBuckets:
    def __init__(self, bytes_per_s: float, burst_bytes: float) -> None:
        self.rate = bytes_per_s
        self.burst = burst_bytes
        self._buckets: dict[str, list[float]] = {}  # bridge -> [tokens, at]

    def allow(self, bridge: str, size: int, now: float | None = None) -> bool:
        """Take `size` bytes from the bridge's bucket; False (and nothing taken) if it lacks them."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(bridge)
        if bucket is None:
            bucket = self._buckets[bridge] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < size:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - size
        return True

    def limited(self, now: float | None = None) -> int:
        """Bridges whose bucket is empty now (the metric of who is being held back)."""
        now = time.monotonic() if now is None else now
        return sum(1 for tokens, at in self._buckets.values() if tokens + (now - at) * self.rate < 1.0)
