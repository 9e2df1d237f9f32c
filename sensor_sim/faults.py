"""Faults a real bridge fleet shows; each is off unless asked for."""

from __future__ import annotations

from dataclasses import dataclass


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

    def any(self) -> bool:
        return any((self.drop_rate, self.duplicate_rate, self.delay_rate, self.malformed_rate,
                    self.bad_value_rate, self.offline_bridge))
