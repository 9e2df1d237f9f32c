"""Sparkplug B (#22), the codec and the host's session per edge node: births, aliases,
sequence numbers and bdSeq, the readings each message carries, and every refusal with its
reason and, where the host lost track, a rebirth request. Pure, no broker: the gateway's
Sparkplug path is tested in tests/test_sparkplug_ingest.py."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.sparkplug_session import Refusal, Sessions, SessionState
from sensor_sim.sparkplug import EdgeNode
from wattline.sparkplug import (
    DataType,
    MessageType,
    Metric,
    Payload,
    SparkplugError,
    Topic,
    decode_payload,
    encode_payload,
    parse_topic,
)

T0 = 1_790_000_000_000  # ms


def topic(kind: MessageType, device: str | None = None) -> str:
    return str(Topic("site-7", kind, "BR-1", device))


def birth(bd_seq: int = 0, seq: int = 0) -> bytes:
    return encode_payload(Payload(T0, seq, (Metric("bdSeq", None, None, DataType.UINT64, bd_seq),
                                            Metric("Node Control/Rebirth", 1, None, DataType.BOOLEAN, False))))


def device_birth(seq: int, amps: float = 4.0) -> bytes:
    return encode_payload(Payload(T0, seq, (Metric("current", 7, T0, DataType.FLOAT, amps),
                                            Metric("rssi", 8, T0, DataType.INT32, 40))))


def data(seq: int, *metrics: Metric) -> bytes:
    return encode_payload(Payload(T0 + 10_000, seq, metrics))


def test_the_payload_round_trips_and_garbage_is_refused_with_a_reason() -> None:
    p = Payload(T0, 3, (Metric("current", 7, T0 + 5, DataType.DOUBLE, 12.25), Metric(None, 7, None, DataType.FLOAT,
                                                                                       None),
                        Metric("name", None, None, DataType.STRING, "Chiller"), Metric("bdSeq", None, None,
                                                                                          DataType.UINT64, 2**40)))
    assert decode_payload(encode_payload(p)) == p
    for bad in (b"\xff\xff\xff", b"\x12\x05\x0a\x03ab", bytes(300 * 1024)):
        with pytest.raises(SparkplugError):
            decode_payload(bad)


@given(st.lists(st.tuples(st.integers(0, 2**63), st.floats(0, 1e6, width=32)), max_size=20), st.integers(0, 255))
def test_any_float_metrics_round_trip(values: list[tuple[int, float]], seq: int) -> None:
    p = Payload(T0, seq, tuple(Metric("current", i, ts, DataType.FLOAT, v) for i, (ts, v) in enumerate(values)))
    assert decode_payload(encode_payload(p)) == p


def test_topics() -> None:
    assert parse_topic("spBv1.0/g/DDATA/BR-1/CT-9") == Topic("g", MessageType.DDATA, "BR-1", "CT-9")
    assert parse_topic("spBv1.0/g/NBIRTH/BR-1") == Topic("g", MessageType.NBIRTH, "BR-1")
    for bad in ("spBv1.0/g/DDATA/BR-1", "spBv1.0/g/NDATA/BR-1/x", "spBv1.0/g/XDATA/BR-1", "wattline/v1/BR-1/senml",
                "spBv1.0/STATE/host", "spBv1.0//NBIRTH/BR-1"):
        with pytest.raises(SparkplugError):
            parse_topic(bad)


def test_a_born_device_reports_current_by_alias() -> None:
    s = Sessions()
    assert s.handle(topic(MessageType.NBIRTH), birth()).refused == []
    born = s.handle(topic(MessageType.DBIRTH, "CT-9"), device_birth(1))
    assert born.readings == [("CT-9", T0 / 1000, 4.0)] and born.refused == []  # a birth carries current values
    out = s.handle(topic(MessageType.DDATA, "CT-9"), data(2, Metric(None, 7, T0 + 10_000, DataType.FLOAT, 5.5),
                                                          Metric(None, 8, T0 + 10_000, DataType.INT32, 41)))
    assert out.readings == [("CT-9", (T0 + 10_000) / 1000, 5.5)] and not out.rebirth and out.edge_node == "BR-1"
    # the payload's timestamp stands in for a metric's own; the sequence wraps after 255
    s2 = Sessions()
    s2.handle(topic(MessageType.NBIRTH), birth(seq=254))
    s2.handle(topic(MessageType.DBIRTH, "CT-9"), device_birth(255))
    out = s2.handle(topic(MessageType.DDATA, "CT-9"), data(0, Metric(None, 7, None, DataType.FLOAT, 1.0)))
    assert out.readings == [("CT-9", (T0 + 10_000) / 1000, 1.0)] and out.refused == []


def test_what_the_host_cannot_read_is_refused_and_a_rebirth_asked() -> None:
    s = Sessions()
    # data before any birth (the host restarted): refused, rebirth
    out = s.handle(topic(MessageType.DDATA, "CT-9"), data(5, Metric(None, 7, T0, DataType.FLOAT, 1.0)))
    assert out.rebirth and "before its NBIRTH" in out.refused[0].detail and out.readings == []
    s.handle(topic(MessageType.NBIRTH), birth())
    s.handle(topic(MessageType.DBIRTH, "CT-9"), device_birth(1))
    # an alias no birth declared
    out = s.handle(topic(MessageType.DDATA, "CT-9"), data(2, Metric(None, 99, T0, DataType.FLOAT, 1.0),
                                                          Metric(None, 7, T0, DataType.FLOAT, 2.0)))
    assert out.rebirth and "alias 99" in out.refused[0].detail and out.readings == [("CT-9", T0 / 1000, 2.0)]
    # a skipped sequence number: refused, and nothing more is read until the rebirth
    out = s.handle(topic(MessageType.DDATA, "CT-9"), data(4, Metric(None, 7, T0, DataType.FLOAT, 3.0)))
    assert out.rebirth and "sequence 4 where 3" in out.refused[0].detail and out.readings == []
    assert not s.online("site-7", "BR-1")
    s.handle(topic(MessageType.NBIRTH), birth(bd_seq=1))
    assert s.handle(topic(MessageType.DBIRTH, "CT-9"), device_birth(1, 3.0)).readings == [("CT-9", T0 / 1000, 3.0)]
    # a device that was never born on this node
    out = s.handle(topic(MessageType.DDATA, "CT-4"), data(2, Metric("current", None, T0, DataType.FLOAT, 1.0)))
    assert out.rebirth and "before its DBIRTH" in out.refused[0].detail


def test_bad_values_are_refused_one_by_one_and_the_rest_read() -> None:
    s = Sessions()
    s.handle(topic(MessageType.NBIRTH), birth())
    s.handle(topic(MessageType.DBIRTH, "CT-9"), device_birth(1))
    out = s.handle(topic(MessageType.DDATA, "CT-9"), encode_payload(Payload(None, 2, (
        Metric(None, 7, T0, DataType.FLOAT, -2.0), Metric(None, 7, T0, DataType.FLOAT, math.nan),
        Metric("current", None, T0, DataType.INT32, 3), Metric(None, 7, None, DataType.FLOAT, 1.0),
        Metric(None, 7, T0 + 1, DataType.DOUBLE, 2.5)))))
    assert out.readings == [("CT-9", (T0 + 1) / 1000, 2.5)] and not out.rebirth
    assert [r.detail.split(": ", 1)[1][:12] for r in out.refused] == [
        "current -2.0", "current nan ", "current must", "current with"]
    garbage = s.handle("spBv1.0/site-7/DDATA/BR-1/CT-9", b"\xff\xff")
    assert garbage.refused[0].detail.startswith("not a Sparkplug B payload")


def test_deaths_a_stale_will_changes_nothing() -> None:
    s = Sessions()
    s.handle(topic(MessageType.NBIRTH), birth(bd_seq=3))
    s.handle(topic(MessageType.NDEATH), encode_payload(Payload(None, None, (Metric("bdSeq", None, None,
                                                                                    DataType.UINT64, 2),))))
    assert s.online("site-7", "BR-1")  # the will of the session before
    s.handle(topic(MessageType.DBIRTH, "CT-9"), device_birth(1))
    s.handle(topic(MessageType.DDEATH, "CT-9"), encode_payload(Payload(T0, 2, ())))
    out = s.handle(topic(MessageType.DDATA, "CT-9"), data(3, Metric(None, 7, T0, DataType.FLOAT, 1.0)))
    assert out.rebirth and "before its DBIRTH" in out.refused[0].detail  # a dead device's aliases are gone
    s.handle(topic(MessageType.NDEATH), encode_payload(Payload(None, None, (Metric("bdSeq", None, None,
                                                                                    DataType.UINT64, 3),))))
    assert not s.online("site-7", "BR-1")
    assert s.handle(topic(MessageType.NBIRTH), encode_payload(Payload(T0, 0, ()))).refused == [
        Refusal("sparkplug_invalid", "NBIRTH needs a bdSeq metric and a sequence number 0-255")]


def test_a_simulated_edge_node_is_read_whole_and_recovers_by_rebirth() -> None:
    """Births, then 300 readings by alias (the sequence wraps) arrive exactly; a lost
    message makes the next refused with a rebirth request, and the rebirth resumes reading;
    so does a host that restarted and lost every session."""
    node = EdgeNode("BR-1")
    host = Sessions()
    sensors = [f"CT-{i}" for i in range(3)]
    sent = [(sensors[k % 3], T0 + 10_000 * (k // 3), 0.25 * (k % 40)) for k in range(300)]

    def deliver(messages: list[tuple[str, bytes]]) -> list[tuple[str, float, float]]:
        got: list[tuple[str, float, float]] = []
        for t, payload in messages:
            out = host.handle(t, payload)
            assert out.refused == [], out.refused
            got += out.readings
        return got

    born = deliver(node.birth([(s, 1.0) for s in sensors], T0 - 1000))
    assert born == [(s, (T0 - 1000) / 1000, 1.0) for s in sensors]
    assert deliver(node.data(sent)) == [(s, ms / 1000, a) for s, ms, a in sent]

    more = node.data([(sensors[0], T0 + 9_000_000 + 10_000 * k, 2.0) for k in range(3)])
    host.handle(*more[0])
    lost_next = host.handle(*more[2])  # more[1] was lost on the way
    assert lost_next.rebirth and "sequence" in lost_next.refused[0].detail and lost_next.readings == []
    assert deliver(node.birth([(sensors[0], 3.0)], T0 + 9_100_000)) == [(sensors[0], (T0 + 9_100_000) / 1000, 3.0)]

    host = Sessions()  # the host restarted
    after = node.data([(sensors[0], T0 + 9_200_000, 4.0)])
    assert host.handle(*after[0]).rebirth
    deliver(node.birth([(s, 1.5) for s in sensors], T0 + 9_300_000))
    assert deliver(node.data([(sensors[1], T0 + 9_400_000, 5.0)])) == [(sensors[1], (T0 + 9_400_000) / 1000, 5.0)]
    # The will carries the session's bdSeq: it ends this session, not a later one.
    host.handle(*node.will())
    assert not host.online("wattline", "BR-1")


def test_refusals_carry_the_reason_they_are_stored_under() -> None:
    s = Sessions()
    s.handle(topic(MessageType.NBIRTH), birth())
    s.handle(topic(MessageType.DBIRTH, "CT-9"), device_birth(1))
    out = s.handle(topic(MessageType.DDATA, "CT-9"), encode_payload(Payload(None, 2, (
        Metric(None, 7, T0, DataType.FLOAT, -2.0), Metric(None, 7, T0, DataType.FLOAT, math.inf),
        Metric(None, 7, T0, DataType.INT32, 3), Metric(None, 7, None, DataType.FLOAT, 1.0),
        Metric(None, 99, T0, DataType.FLOAT, 1.0)))))
    assert [(r.reason, r.sensor) for r in out.refused] == [
        ("negative_value", "CT-9"), ("not_finite", "CT-9"), ("bad_field_type", "CT-9"), ("sparkplug_invalid", "CT-9"),
        ("sparkplug_out_of_session", "CT-9")]
    assert s.handle("spBv1.0/site-7/XDATA/BR-1", b"").refused[0].reason == "sparkplug_invalid"


def test_a_redelivered_message_is_read_again_without_a_rebirth() -> None:
    """QoS 1 may deliver the last message twice: the repeat's readings are read again (the
    store keeps each once) and the session goes on."""
    s = Sessions()
    s.handle(topic(MessageType.NBIRTH), birth())
    s.handle(topic(MessageType.DBIRTH, "CT-9"), device_birth(1))
    message = data(2, Metric(None, 7, T0 + 10_000, DataType.FLOAT, 5.5))
    first = s.handle(topic(MessageType.DDATA, "CT-9"), message)
    again = s.handle(topic(MessageType.DDATA, "CT-9"), message)
    assert first.readings == again.readings == [("CT-9", (T0 + 10_000) / 1000, 5.5)]
    assert not again.rebirth and again.refused == [] and again.state == first.state
    assert s.handle(topic(MessageType.DDATA, "CT-9"), data(3, Metric(None, 7, T0, DataType.FLOAT, 1.0))).refused == []


def test_each_outcome_carries_the_session_after_it_and_a_host_restores_them() -> None:
    """What the gateway makes durable with a batch, and rewinds to when the broker
    redelivers what it had not acked."""
    s = Sessions()
    born = s.handle(topic(MessageType.NBIRTH), birth(bd_seq=4))
    node = {"": {1: "Node Control/Rebirth"}}  # the node's own aliases, from its birth
    assert born.state == SessionState(4, 0, node) and born.online is True and born.key == ("site-7", "BR-1")
    device = s.handle(topic(MessageType.DBIRTH, "CT-9"), device_birth(1))
    assert device.state == SessionState(4, 1, {**node, "CT-9": {7: "current", 8: "rssi"}})
    kept = s.states()
    s.handle(topic(MessageType.DDATA, "CT-9"), data(2, Metric(None, 7, T0, DataType.FLOAT, 1.0)))
    s.restore(kept)  # message 2 was not acked: it comes again, and reads as new
    again = s.handle(topic(MessageType.DDATA, "CT-9"), data(2, Metric(None, 7, T0, DataType.FLOAT, 1.0)))
    assert again.readings == [("CT-9", T0 / 1000, 1.0)]
    assert again.state == SessionState(4, 2, {**node, "CT-9": {7: "current", 8: "rssi"}})
    assert device.state.seq == 1  # an earlier outcome's state is not changed by later messages
    ended = s.handle(topic(MessageType.NDEATH), encode_payload(Payload(None, None, (
        Metric("bdSeq", None, None, DataType.UINT64, 4),))))
    assert ended.ended and ended.state is None and ended.online is False
    restarted = Sessions(kept)
    assert restarted.handle(topic(MessageType.DDATA, "CT-9"), data(2, Metric(None, 7, T0, DataType.FLOAT, 1.0))
                            ).readings


def test_a_redelivery_of_what_was_read_before_changes_nothing() -> None:
    """A gateway that stored a batch and stopped before its acks reached the broker resumes
    past it, and is sent it again with the DUP flag: read again, no refusal, no rebirth,
    and the session goes on from where it was."""
    s = Sessions()
    s.handle(topic(MessageType.NBIRTH), birth(bd_seq=2))
    s.handle(topic(MessageType.DBIRTH, "CT-9"), device_birth(1))
    sent = [data(k, Metric(None, 7, T0 + 1000 * k, DataType.FLOAT, float(k))) for k in range(2, 6)]
    for message in sent:
        s.handle(topic(MessageType.DDATA, "CT-9"), message)
    again = [s.handle(topic(MessageType.DDATA, "CT-9"), m, dup=True) for m in sent[:3]]
    assert [o.readings for o in again] == [[("CT-9", (T0 + 1000 * k) / 1000, float(k))] for k in range(2, 5)]
    assert not any(o.refused or o.rebirth for o in again)
    assert s.handle(topic(MessageType.NBIRTH), birth(bd_seq=2), dup=True).refused == []  # the birth, again
    out = s.handle(topic(MessageType.DDATA, "CT-9"), data(6, Metric(None, 7, T0, DataType.FLOAT, 6.0)))
    assert out.readings and not out.refused
    # Without the flag, a number out of turn is a lost message: refused, rebirth asked.
    late = s.handle(topic(MessageType.DDATA, "CT-9"), data(3, Metric(None, 7, T0, DataType.FLOAT, 3.0)))
    assert late.rebirth and late.refused[0].reason == "sparkplug_out_of_session"


def test_an_edge_node_may_report_its_sensors_in_its_own_messages() -> None:
    """A whole sweep in one NDATA: `<serial>/current` per sensor, declared with aliases in
    the NBIRTH (which carries the current values, nulls being no reading); a name not of that
    form is not a reading, an alias the birth lacks is refused and a rebirth asked."""
    s = Sessions()
    born = s.handle(topic(MessageType.NBIRTH), encode_payload(Payload(T0, 0, (
        Metric("bdSeq", None, None, DataType.UINT64, 0), Metric("CT-1/current", 10, T0, DataType.FLOAT, 3.0),
        Metric("CT-2/current", 11, T0, DataType.FLOAT, None), Metric("Properties/firmware", 12, T0,
                                                                      DataType.STRING, "1.2")))))
    assert born.readings == [("CT-1", T0 / 1000, 3.0)] and born.refused == []
    out = s.handle(topic(MessageType.NDATA), encode_payload(Payload(T0 + 10_000, 1, (
        Metric(None, 10, None, DataType.FLOAT, 4.5), Metric(None, 11, None, DataType.FLOAT, 0.5),
        Metric("CT-3/current", None, None, DataType.DOUBLE, 7.0), Metric(None, 12, None, DataType.STRING, "1.3")))))
    assert out.readings == [("CT-1", (T0 + 10_000) / 1000, 4.5), ("CT-2", (T0 + 10_000) / 1000, 0.5),
                            ("CT-3", (T0 + 10_000) / 1000, 7.0)] and out.refused == []
    unknown = Metric(None, 99, T0, DataType.FLOAT, 1.0)
    out = s.handle(topic(MessageType.NDATA), encode_payload(Payload(T0, 2, (unknown,))))
    assert out.rebirth and "alias 99 is not in its NBIRTH" in out.refused[0].detail
