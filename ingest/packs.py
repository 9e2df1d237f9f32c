"""What the gateway carries from the broker to the database."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RawPack:
    topic: str
    payload: bytes
    received_at: float  # Unix seconds at broker receipt: "now" for relative SenML times
    mid: int = 0
    qos: int = 0
    limited: bool = False  # over its bridge's rate: kept as a rejection, not decoded


@dataclass
class BatchResult:
    packs: int = 0
    readings: int = 0
    stored: int = 0
    duplicates: int = 0
    discovered: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
