"""Faults a real bridge fleet shows; each is off unless asked for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoadChange:
    """Something happening to some circuits between `start` and `end` (Unix seconds, data
    time): a heater left on, a clamp gone quiet, a compressor short-cycling. Alert tests use
    these to put a known event into otherwise normal load."""

    serials: tuple[str, ...]
    start: float
    end: float
    factor: float = 1.0  # current × factor ...
    offset_a: float = 0.0  # ... + offset_a
    silent: bool = False  # the sensor sends nothing (flat battery, out of radio range)
    cycle_period_s: float | None = None  # a compressor cycling with this period, 45 % duty

    def active(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass
class Faults:
    drop_rate: float = 0.0  # a pack never arrives
    duplicate_rate: float = 0.0  # a pack is sent twice (resend after a reconnect)
    delay_rate: float = 0.0  # a pack is held back ...
    max_delay_packs: int = 5  # ... for up to this many later packs: out of order
    malformed_rate: float = 0.0  # a pack is garbage (truncated JSON)
    bad_value_rate: float = 0.0  # a reading is NaN or negative
    offline_bridge: str | None = None  # this bridge goes offline ...
    offline_after_ticks: int = 0  # ... after this many ticks ...
    offline_for_ticks: int = 0  # ... for this many, buffering, then flushes its buffer
    load_changes: tuple[LoadChange, ...] = ()

    def any(self) -> bool:
        return any((self.drop_rate, self.duplicate_rate, self.delay_rate, self.malformed_rate,
                    self.bad_value_rate, self.offline_bridge, self.load_changes))
