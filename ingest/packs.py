"""What the gateway carries from the broker to the database."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest.sparkplug_session import Refusal, SessionKey, SessionState


@dataclass(frozen=True)
class SparkplugNote:
    """What a Sparkplug B message carries for the writer: its readings (sensor serial, epoch
    seconds, amperes; the writer decodes a batch's, bridge by bridge, as SenML packs), its
    edge node (`key`; None if the topic was unreadable) and that node's session after it
    (`state`; None when there is none, and `ended` when this message ended it), what was
    refused, and, only then, the message as sent."""

    key: SessionKey | None
    state: SessionState | None
    ended: bool = False
    refused: tuple[Refusal, ...] = ()
    topic: str = ""
    payload: bytes = b""
    readings: tuple[tuple[str, float, float], ...] = ()

    @property
    def changes_session(self) -> bool:
        return self.key is not None and (self.state is not None or self.ended)


@dataclass
class RawPack:
    topic: str
    payload: bytes
    received_at: float  # Unix seconds at broker receipt: "now" for relative SenML times
    mid: int = 0
    qos: int = 0
    limited: bool = False  # over its bridge's rate: kept as a rejection, not decoded
    sparkplug: SparkplugNote | None = None  # translated from Sparkplug B (ingest/sparkplug_host.py)


@dataclass
class BatchResult:
    packs: int = 0
    readings: int = 0
    stored: int = 0
    duplicates: int = 0
    discovered: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
