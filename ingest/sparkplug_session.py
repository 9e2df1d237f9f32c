"""The Sparkplug B host's view of each edge node (bridge): its birth, its sequence numbers
and its metric aliases, and the readings each message carries.

Sparkplug is stateful where SenML is not: a data message may name its metrics by alias
only, valid since the last birth, and each message of an edge node carries the next
sequence number (0-255, wrapping). A host that has not seen the birth (it restarted), meets
an alias it does not know, or sees a number skipped cannot read what follows reliably, so
it refuses the message with the reason and asks the edge node to be born again (an NCMD
`Node Control/Rebirth`); the birth that answers carries every metric's current value.

One process must see all of an edge node's messages, in order. MQTT shared subscriptions
spread messages over a group's members, so Sparkplug is read by one gateway at a time (the
primary host), not by the shared group that reads SenML.

This module is pure: messages in, readings and decisions out. `handle` never raises on
what a bridge sent; every refusal is a reason in the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wattline.sparkplug import (
    BDSEQ_METRIC,
    CURRENT_METRIC,
    MessageType,
    Metric,
    Payload,
    SparkplugError,
    current_amps,
    decode_payload,
    parse_topic,
)


@dataclass
class Outcome:
    """What one message gave: readings (sensor serial, epoch seconds, amperes), reasons for
    what was refused, and whether to ask its edge node for a rebirth."""

    edge_node: str | None = None
    readings: list[tuple[str, float, float]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    rebirth: bool = False


@dataclass
class _EdgeNode:
    bd_seq: int
    seq: int
    aliases: dict[str, dict[int, str]] = field(default_factory=dict)  # device -> alias -> name


class Sessions:
    """Every edge node's session, as one host sees them."""

    def __init__(self) -> None:
        self._nodes: dict[tuple[str, str], _EdgeNode] = {}

    def online(self, group: str, edge_node: str) -> bool:
        return (group, edge_node) in self._nodes

    def handle(self, topic: str, data: bytes) -> Outcome:
        try:
            t = parse_topic(topic)
            payload = decode_payload(data)
        except SparkplugError as exc:
            return Outcome(refused=[str(exc)])
        out = Outcome(edge_node=t.edge_node)
        key = (t.group, t.edge_node)
        node = self._nodes.get(key)
        if t.type is MessageType.NDEATH:
            bd_seq = _bd_seq(payload)
            if node is not None and bd_seq == node.bd_seq:  # a stale will (an older session's) changes nothing
                del self._nodes[key]
            return out
        if t.type is MessageType.NBIRTH:
            bd_seq = _bd_seq(payload)
            if bd_seq is None or payload.seq is None or not 0 <= payload.seq <= 255:
                out.refused.append("NBIRTH needs a bdSeq metric and a sequence number 0-255")
                return out
            self._nodes[key] = _EdgeNode(bd_seq, payload.seq)
            return out
        if t.type in (MessageType.NCMD, MessageType.DCMD):
            return out  # commands go to bridges; a host's own echo is not data
        if node is None:
            out.refused.append(f"{t.type.value} from {t.edge_node} before its NBIRTH")
            out.rebirth = True
            return out
        if payload.seq is None or payload.seq != (node.seq + 1) % 256:
            out.refused.append(f"{t.type.value} sequence {payload.seq} where {(node.seq + 1) % 256} was next")
            del self._nodes[key]  # nothing more is read until the edge node is born again
            out.rebirth = True
            return out
        node.seq = payload.seq
        device = t.device or ""
        if t.type is MessageType.DBIRTH:
            node.aliases[device] = {m.alias: m.name for m in payload.metrics if m.alias is not None and m.name}
        elif t.type is MessageType.DDEATH:
            node.aliases.pop(device, None)
            return out
        elif t.type is MessageType.DDATA and device not in node.aliases:
            out.refused.append(f"DDATA from {t.device} before its DBIRTH")
            out.rebirth = True
            return out
        if t.type in (MessageType.DBIRTH, MessageType.DDATA):
            self._readings(out, t.device or "", node.aliases.get(device, {}), payload)
        return out

    @staticmethod
    def _readings(out: Outcome, sensor: str, aliases: dict[int, str], payload: Payload) -> None:
        for metric in payload.metrics:
            name = metric.name or (aliases.get(metric.alias) if metric.alias is not None else None)
            if name is None:
                out.refused.append(f"{sensor}: metric alias {metric.alias} is not in its DBIRTH")
                out.rebirth = True
                continue
            if name != CURRENT_METRIC or metric.value is None:
                continue  # other metrics (and nulls: no value now) are not readings
            stamp = metric.timestamp_ms if metric.timestamp_ms is not None else payload.timestamp_ms
            if stamp is None:
                out.refused.append(f"{sensor}: current without a timestamp")
                continue
            try:
                out.readings.append((sensor, stamp / 1000, current_amps(metric)))
            except SparkplugError as exc:
                out.refused.append(f"{sensor}: {exc}")


def _bd_seq(payload: Payload) -> int | None:
    found = next((m for m in payload.metrics if m.name == BDSEQ_METRIC), None)
    return _whole(found) if found is not None else None


def _whole(metric: Metric) -> int | None:
    return metric.value if isinstance(metric.value, int) and not isinstance(metric.value, bool) else None
