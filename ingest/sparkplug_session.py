"""The Sparkplug B host's view of each edge node (bridge): its birth, its sequence numbers
and its metric aliases, and the readings each message carries.

Sparkplug is stateful where SenML is not: a data message may name its metrics by alias
only, valid since the last birth, and each message of an edge node carries the next
sequence number (0-255, wrapping). A host that has not seen the birth (it restarted), meets
an alias it does not know, or sees a number skipped cannot read what follows reliably, so
it refuses the message with the reason and asks the edge node to be born again (an NCMD
`Node Control/Rebirth`); the birth that answers carries every metric's current value.

One process must see all of an edge node's messages, in order. MQTT shared subscriptions
spread messages over a group's members, so Sparkplug is read by one gateway (the primary
host, `Settings.sparkplug_host`) on a plain subscription, not by the shared group that
reads SenML.

A QoS 1 redelivery of a message already read (the broker's DUP flag, or the last sequence
number again) is read again, its readings kept once by storage, and changes nothing: a
gateway stopped or killed after storing a batch and before its acks reached the broker is
sent it again, and the sessions it resumes are already past it. Asking for a rebirth then
would lose what follows until the births came.

Each message's outcome carries its edge node's session as it stands after the message
(`SessionState`, immutable), so the gateway can make a batch's sessions durable with its
readings and rewind to them when the broker redelivers what was not acked.

This module is pure: messages in, readings and decisions out. `handle` never raises on
what a bridge sent; every refusal is a reason in the outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from wattline.senml import Reason
from wattline.sparkplug import (
    BDSEQ_METRIC,
    CURRENT_METRIC,
    NODE_CURRENT_SUFFIX,
    MessageType,
    Metric,
    Payload,
    SparkplugError,
    current_amps,
    decode_payload,
    parse_topic,
)


class Refusal(NamedTuple):
    """Why (part of) a message was not read: a `wattline.senml.Reason` and the detail."""

    reason: str
    detail: str
    sensor: str | None = None


@dataclass(frozen=True)
class SessionState:
    """An edge node's session after some message: never changed, replaced by the next."""

    bd_seq: int
    seq: int
    aliases: Mapping[str, Mapping[int, str]] = field(default_factory=dict)  # device -> alias -> metric name


SessionKey = tuple[str, str]  # (group, edge node)


@dataclass
class Outcome:
    """What one message gave: readings (sensor serial, epoch seconds, amperes), what was
    refused and why, whether to ask its edge node for a rebirth, the edge node's online
    status if the message changed it, and its session after the message (`state`; None
    with `ended`, when the message ended it)."""

    group: str | None = None
    edge_node: str | None = None
    readings: list[tuple[str, float, float]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    rebirth: bool = False
    online: bool | None = None
    state: SessionState | None = None
    ended: bool = False

    @property
    def key(self) -> SessionKey | None:
        return None if self.group is None or self.edge_node is None else (self.group, self.edge_node)


class Sessions:
    """Every edge node's session, as one host sees them."""

    def __init__(self, states: Mapping[SessionKey, SessionState] | None = None) -> None:
        self._nodes: dict[SessionKey, SessionState] = dict(states or {})

    def online(self, group: str, edge_node: str) -> bool:
        return (group, edge_node) in self._nodes

    def states(self) -> dict[SessionKey, SessionState]:
        return dict(self._nodes)

    def restore(self, states: Mapping[SessionKey, SessionState]) -> None:
        """Back to these sessions (those made durable), forgetting any read since."""
        self._nodes = dict(states)

    def handle(self, topic: str, data: bytes, dup: bool = False) -> Outcome:
        """What the message gives; `dup`: the broker's DUP flag (it was sent before)."""
        try:
            t = parse_topic(topic)
        except SparkplugError as exc:
            return Outcome(refused=[Refusal(exc.reason, str(exc))])
        out = Outcome(group=t.group, edge_node=t.edge_node)
        try:
            payload = decode_payload(data)
        except SparkplugError as exc:
            out.refused.append(Refusal(exc.reason, str(exc), t.device))
            return out
        key = (t.group, t.edge_node)
        node = self._nodes.get(key)
        out.state = node
        if t.type is MessageType.NDEATH:
            # A stale will (an older session's) changes nothing.
            if node is not None and _bd_seq(payload) == node.bd_seq:
                del self._nodes[key]
                out.state, out.ended, out.online = None, True, False
            return out
        if t.type is MessageType.NBIRTH:
            bd_seq = _bd_seq(payload)
            if dup and node is not None and bd_seq == node.bd_seq:
                return out  # the birth of the session in hand, again: it must not restart the count
            if bd_seq is None or payload.seq is None or not 0 <= payload.seq <= 255:
                out.refused.append(Refusal(Reason.SPARKPLUG_INVALID,
                                           "NBIRTH needs a bdSeq metric and a sequence number 0-255"))
                return out
            # The node's own metrics may carry sensors' currents too (`<serial>/current`).
            node_aliases = {m.alias: m.name for m in payload.metrics if m.alias is not None and m.name}
            self._nodes[key] = out.state = SessionState(bd_seq, payload.seq, {"": node_aliases} if node_aliases else {})
            out.online = True
            self._readings(out, None, node_aliases, payload)
            return out
        if t.type in (MessageType.NCMD, MessageType.DCMD):
            return out  # commands go to bridges; a host's own echo is not data
        if node is None:
            return _lost(out, f"{t.type.value} from {t.edge_node} before its NBIRTH")
        device = t.device or ""
        if payload.seq is not None and (payload.seq == node.seq or dup) and payload.seq != (node.seq + 1) % 256 \
                and t.type is not MessageType.DDEATH:
            # A redelivery of a message read before (QoS 1): read it again, change nothing.
            if t.type in _CARRY_READINGS and (t.device is None or device in node.aliases):
                self._readings(out, t.device, node.aliases.get(device, {}), payload)
            return out
        if payload.seq is None or payload.seq != (node.seq + 1) % 256:
            del self._nodes[key]  # nothing more is read until the edge node is born again
            out.state, out.ended = None, True
            return _lost(out, f"{t.type.value} sequence {payload.seq} where {(node.seq + 1) % 256} was next")
        aliases = node.aliases
        if t.type is MessageType.DBIRTH:
            aliases = {**aliases, device: {m.alias: m.name for m in payload.metrics if m.alias is not None and m.name}}
        elif t.type is MessageType.DDEATH:
            aliases = {d: a for d, a in aliases.items() if d != device}
        self._nodes[key] = out.state = SessionState(node.bd_seq, payload.seq, aliases)
        if t.type is MessageType.DDATA and device not in aliases:
            return _lost(out, f"DDATA from {t.device} before its DBIRTH")
        if t.type in _CARRY_READINGS:
            self._readings(out, t.device, aliases.get(device, {}), payload)
        return out

    @staticmethod
    def _readings(out: Outcome, device: str | None, aliases: Mapping[int, str], payload: Payload) -> None:
        """A device's `current` (`device` its sensor), or, in the node's own messages
        (`device` None), each `<sensor serial>/current`."""
        for metric in payload.metrics:
            name = metric.name or (aliases.get(metric.alias) if metric.alias is not None else None)
            if name is None:
                birth = "DBIRTH" if device is not None else "NBIRTH"
                _lost(out, f"{device or out.edge_node}: metric alias {metric.alias} is not in its {birth}", device)
                continue
            if device is not None:
                sensor = device if name == CURRENT_METRIC else None
            else:
                sensor = name[:-len(NODE_CURRENT_SUFFIX)] if name.endswith(NODE_CURRENT_SUFFIX) else None
            if not sensor or metric.value is None:
                continue  # other metrics (and nulls: no value now) are not readings
            stamp = metric.timestamp_ms if metric.timestamp_ms is not None else payload.timestamp_ms
            if stamp is None:
                out.refused.append(Refusal(Reason.SPARKPLUG_INVALID, f"{sensor}: current without a timestamp", sensor))
                continue
            try:
                out.readings.append((sensor, stamp / 1000, current_amps(metric)))
            except SparkplugError as exc:
                out.refused.append(Refusal(exc.reason, f"{sensor}: {exc}", sensor))


#: Messages whose metrics are readings after their birth; the node's own aliases are kept
#: under the device "" (its NDATA's), a device's under its serial.
_CARRY_READINGS = (MessageType.DBIRTH, MessageType.DDATA, MessageType.NDATA)


def _lost(out: Outcome, detail: str, sensor: str | None = None) -> Outcome:
    """The host lost track of the edge node: refuse, and ask for a rebirth."""
    out.refused.append(Refusal(Reason.SPARKPLUG_OUT_OF_SESSION, detail, sensor))
    out.rebirth = True
    return out


def _bd_seq(payload: Payload) -> int | None:
    found = next((m for m in payload.metrics if m.name == BDSEQ_METRIC), None)
    return _whole(found) if found is not None else None


def _whole(metric: Metric) -> int | None:
    return metric.value if isinstance(metric.value, int) and not isinstance(metric.value, bool) else None
