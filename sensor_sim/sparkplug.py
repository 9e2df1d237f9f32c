"""A simulated bridge speaking Sparkplug B: the messages an edge node sends for its
sensors' readings, in order, with its births, aliases and sequence numbers.

Each sensor is a device with one metric, `current` (Float, amperes), declared with an
alias in its DBIRTH; data messages name it by alias only, as bandwidth-minded edge
nodes do. The sequence number runs over every message after the NBIRTH, wrapping at 255.
"""

from __future__ import annotations

from collections.abc import Iterable

from wattline.sparkplug import (
    BDSEQ_METRIC,
    CURRENT_METRIC,
    NODE_CURRENT_SUFFIX,
    REBIRTH_METRIC,
    DataType,
    MessageType,
    Metric,
    Payload,
    SparkplugError,
    Topic,
    decode_payload,
    encode_payload,
)

Message = tuple[str, bytes]  # topic, payload
CURRENT_ALIAS = 1


class EdgeNode:
    """One bridge's Sparkplug session: call `birth` first (and again when asked)."""

    def __init__(self, bridge: str, group: str = "wattline", *, per_node: bool = False) -> None:
        """`per_node`: report every sensor in the node's own NBIRTH and NDATA
        (`<serial>/current`, a sweep a message), not as devices."""
        self.bridge, self.group, self.per_node = bridge, group, per_node
        self.bd_seq = -1
        self._seq = 0
        self._born: set[str] = set()
        self._alias: dict[str, int] = {}  # per node: sensor -> its metric's alias

    def _topic(self, kind: MessageType, device: str | None = None) -> str:
        return str(Topic(self.group, kind, self.bridge, device))

    def _next(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    def will(self) -> Message:
        """The NDEATH the broker publishes for this session if the bridge goes away."""
        return self._topic(MessageType.NDEATH), encode_payload(Payload(None, None, (
            Metric(BDSEQ_METRIC, None, None, DataType.UINT64, self.bd_seq),)))

    def birth(self, sensors: Iterable[tuple[str, float | None]], at_ms: int) -> list[Message]:
        """A new session: NBIRTH (a new bdSeq, sequence 0), then each sensor's DBIRTH with
        its current value (sensor serial, amperes; None: no value now, a null metric)."""
        self.bd_seq = (self.bd_seq + 1) % 256
        self._seq = 0
        self._born.clear()
        if self.per_node:
            sensors = list(sensors)
            self._alias = {serial: k for k, (serial, _) in enumerate(sensors, start=CURRENT_ALIAS + 1)}
            return [(self._topic(MessageType.NBIRTH), encode_payload(Payload(at_ms, 0, (
                Metric(BDSEQ_METRIC, None, None, DataType.UINT64, self.bd_seq),
                Metric(REBIRTH_METRIC, None, at_ms, DataType.BOOLEAN, False),
                *(Metric(serial + NODE_CURRENT_SUFFIX, self._alias[serial], at_ms, DataType.FLOAT, amps)
                  for serial, amps in sensors)))))]
        out = [(self._topic(MessageType.NBIRTH), encode_payload(Payload(at_ms, 0, (
            Metric(BDSEQ_METRIC, None, None, DataType.UINT64, self.bd_seq),
            Metric(REBIRTH_METRIC, None, at_ms, DataType.BOOLEAN, False)))))]
        for serial, amps in sensors:
            self._born.add(serial)
            out.append((self._topic(MessageType.DBIRTH, serial), encode_payload(Payload(at_ms, self._next(), (
                Metric(CURRENT_METRIC, CURRENT_ALIAS, at_ms, DataType.FLOAT, amps),)))))
        return out

    def data(self, readings: Iterable[tuple[str, int, float]]) -> list[Message]:
        """Each reading (sensor serial, milliseconds, amperes) as a DDATA by alias, one per
        sensor and time; a sensor not yet born gets a DBIRTH carrying the reading instead."""
        if self.per_node:
            return self._node_data(readings)
        out: list[Message] = []
        for serial, at_ms, amps in readings:
            if serial not in self._born:
                self._born.add(serial)
                out.append((self._topic(MessageType.DBIRTH, serial), encode_payload(Payload(at_ms, self._next(), (
                    Metric(CURRENT_METRIC, CURRENT_ALIAS, at_ms, DataType.FLOAT, amps),)))))
                continue
            out.append((self._topic(MessageType.DDATA, serial), encode_payload(Payload(at_ms, self._next(), (
                Metric(None, CURRENT_ALIAS, at_ms, DataType.FLOAT, amps),)))))
        return out

    def _node_data(self, readings: Iterable[tuple[str, int, float]]) -> list[Message]:
        """One NDATA per time, its sensors by alias (by name, one the birth did not declare)."""
        sweeps: dict[int, list[Metric]] = {}
        for serial, at_ms, amps in readings:
            alias = self._alias.get(serial)
            sweeps.setdefault(at_ms, []).append(
                Metric(None if alias else serial + NODE_CURRENT_SUFFIX, alias, None, DataType.FLOAT, amps))
        return [(self._topic(MessageType.NDATA), encode_payload(Payload(at_ms, self._next(), tuple(metrics))))
                for at_ms, metrics in sweeps.items()]

    def death(self) -> Message:
        """The NDEATH a bridge that closes cleanly publishes itself (its will is for the unclean)."""
        return self.will()

    def rebirth_asked(self, topic: str, payload: bytes) -> bool:
        """Whether a message to this edge node is a host's rebirth request."""
        if topic != self._topic(MessageType.NCMD):
            return False
        try:
            metrics = decode_payload(payload).metrics
        except SparkplugError:
            return False
        return any(m.name == REBIRTH_METRIC and m.value is True for m in metrics)

    def sensors(self) -> list[str]:
        return sorted(self._born)
