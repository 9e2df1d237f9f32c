"""Sparkplug B, the second wire format beside SenML: its topic namespace, its payload, and
how a bridge's metrics map to readings.

The payload is Eclipse Sparkplug B's protobuf (`org.eclipse.tahu.protobuf.Payload`), of
which Wattline needs the scalar metrics: the schema below carries the specification's
field numbers for those, and protobuf skips the others (datasets, templates, properties)
on decoding. It is built at import from a descriptor, so there is no generated module to
keep in step with the protobuf runtime.

Mapping, the contract a bridge speaking Sparkplug follows:
- topic `spBv1.0/<group>/<type>/<edge node>[/<device>]`; the edge node id is the bridge's
  serial, a device id is a sensor's serial;
- a device's RMS current is the metric `current` (Float or Double, amperes), timestamped
  in milliseconds (its own timestamp, else the payload's); or an edge node reports its
  sensors in its own NBIRTH and NDATA, one metric `<sensor serial>/current` each (a whole
  sweep in one message, as a SenML pack carries it);
- the edge node's births carry `bdSeq`, and its death the same `bdSeq` (the MQTT will).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from wattline.senml import Reason

NAMESPACE = "spBv1.0"
CURRENT_METRIC = "current"
NODE_CURRENT_SUFFIX = "/" + CURRENT_METRIC  # an edge node's own metric `<sensor serial>/current`
BDSEQ_METRIC = "bdSeq"
REBIRTH_METRIC = "Node Control/Rebirth"
MAX_PAYLOAD_BYTES = 256 * 1024


class MessageType(StrEnum):
    """The third level of a Sparkplug topic: births, deaths, data and commands."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    NDATA = "NDATA"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    DDATA = "DDATA"
    DCMD = "DCMD"
    STATE = "STATE"


class DataType:
    """The specification's data type codes that Wattline reads or writes."""

    INT8, INT16, INT32, INT64 = 1, 2, 3, 4
    UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
    FLOAT, DOUBLE, BOOLEAN, STRING = 9, 10, 11, 12


class SparkplugError(ValueError):
    """A topic, payload or metric that Wattline cannot read; the text says why, and `reason`
    is the rejection reason it is stored under (wattline.senml.Reason)."""

    def __init__(self, detail: str, reason: str = Reason.SPARKPLUG_INVALID) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Topic:
    """A Sparkplug topic, parsed: the edge node is a bridge, a device a sensor."""

    group: str
    type: MessageType
    edge_node: str
    device: str | None = None

    def __str__(self) -> str:
        device = f"/{self.device}" if self.device else ""
        return f"{NAMESPACE}/{self.group}/{self.type.value}/{self.edge_node}{device}"


@functools.lru_cache(maxsize=65_536)  # a fleet's topics repeat: one per sensor
def parse_topic(topic: str) -> Topic:
    """The topic's parts, or SparkplugError saying why it is not a bridge's Sparkplug topic."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != NAMESPACE:
        raise SparkplugError(f"not a {NAMESPACE} topic: {topic!r}")
    if parts[1] == MessageType.STATE:  # a host application's state, which Wattline publishes, not reads
        raise SparkplugError("a STATE topic is a host application's, not a bridge's")
    try:
        kind = MessageType(parts[2])
    except ValueError:
        raise SparkplugError(f"unknown message type {parts[2]!r}") from None
    device_kinds = (MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD)
    if (kind in device_kinds and len(parts) != 5) or (kind not in device_kinds and len(parts) != 4):
        raise SparkplugError(f"{kind.value} topic has the wrong number of levels: {topic!r}")
    if any(not p for p in parts):
        raise SparkplugError(f"empty topic level in {topic!r}")
    return Topic(parts[1], kind, parts[3], parts[4] if len(parts) == 5 else None)


def _schema() -> tuple[Any, Any]:
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="wattline_sparkplug_b.proto", package="org.eclipse.tahu.protobuf",
                                              syntax="proto2")
    payload = file.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    metric.oneof_decl.add(name="value")  # as in Tahu's schema: one C call says which value is set
    for name, number, kind in (("name", 1, f.TYPE_STRING), ("alias", 2, f.TYPE_UINT64), ("timestamp", 3, f.TYPE_UINT64),
                               ("datatype", 4, f.TYPE_UINT32), ("is_historical", 5, f.TYPE_BOOL),
                               ("is_transient", 6, f.TYPE_BOOL), ("is_null", 7, f.TYPE_BOOL)):
        metric.field.add(name=name, number=number, type=kind, label=f.LABEL_OPTIONAL)
    for name, number, kind in (("int_value", 10, f.TYPE_UINT32), ("long_value", 11, f.TYPE_UINT64),
                               ("float_value", 12, f.TYPE_FLOAT), ("double_value", 13, f.TYPE_DOUBLE),
                               ("boolean_value", 14, f.TYPE_BOOL), ("string_value", 15, f.TYPE_STRING),
                               ("bytes_value", 16, f.TYPE_BYTES)):
        metric.field.add(name=name, number=number, type=kind, label=f.LABEL_OPTIONAL, oneof_index=0)
    payload.field.add(name="timestamp", number=1, type=f.TYPE_UINT64, label=f.LABEL_OPTIONAL)
    payload.field.add(name="metrics", number=2, type=f.TYPE_MESSAGE, label=f.LABEL_REPEATED,
                      type_name=".org.eclipse.tahu.protobuf.Payload.Metric")
    payload.field.add(name="seq", number=3, type=f.TYPE_UINT64, label=f.LABEL_OPTIONAL)
    payload.field.add(name="uuid", number=4, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    payload.field.add(name="body", number=5, type=f.TYPE_BYTES, label=f.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    descriptor = pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload")
    return message_factory.GetMessageClass(descriptor), message_factory.GetMessageClass(descriptor.nested_types[0])


PayloadMessage, MetricMessage = _schema()


@dataclass(frozen=True)
class Metric:
    """One scalar metric: by name (in births, and data without aliases) or by alias."""

    name: str | None
    alias: int | None
    timestamp_ms: int | None
    datatype: int | None
    value: float | int | bool | str | bytes | None


@dataclass(frozen=True)
class Payload:
    """A payload's timestamp, sequence number (0-255) and metrics."""

    timestamp_ms: int | None
    seq: int | None
    metrics: tuple[Metric, ...]


_VALUE_FIELDS = {DataType.INT8: "int_value", DataType.INT16: "int_value", DataType.INT32: "int_value",
                 DataType.UINT8: "int_value", DataType.UINT16: "int_value", DataType.UINT32: "int_value",
                 DataType.INT64: "long_value", DataType.UINT64: "long_value", DataType.FLOAT: "float_value",
                 DataType.DOUBLE: "double_value", DataType.BOOLEAN: "boolean_value",
                 DataType.STRING: "string_value"}


def decode_payload(data: bytes) -> Payload:
    """The payload's scalar metrics, or SparkplugError saying why it cannot be read."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise SparkplugError(f"payload of {len(data)} bytes is over {MAX_PAYLOAD_BYTES}")
    message = PayloadMessage()
    try:
        message.ParseFromString(data)
    except (DecodeError, RecursionError) as exc:
        raise SparkplugError(f"not a Sparkplug B payload: {exc}") from None
    metrics = []
    for m in message.metrics:
        field = m.WhichOneof("value")
        metrics.append(Metric(m.name if m.HasField("name") else None, m.alias if m.HasField("alias") else None,
                              m.timestamp if m.HasField("timestamp") else None,
                              m.datatype if m.HasField("datatype") else None,
                              None if field is None or m.is_null else getattr(m, field)))
    return Payload(message.timestamp if message.HasField("timestamp") else None,
                   message.seq if message.HasField("seq") else None, tuple(metrics))


def encode_payload(payload: Payload) -> bytes:
    """The payload as a bridge (or the simulator, or a test) sends it."""
    message = PayloadMessage()
    if payload.timestamp_ms is not None:
        message.timestamp = payload.timestamp_ms
    if payload.seq is not None:
        message.seq = payload.seq
    for metric in payload.metrics:
        m = message.metrics.add()
        if metric.name is not None:
            m.name = metric.name
        if metric.alias is not None:
            m.alias = metric.alias
        if metric.timestamp_ms is not None:
            m.timestamp = metric.timestamp_ms
        if metric.datatype is not None:
            m.datatype = metric.datatype
            if metric.value is None:
                m.is_null = True
            else:
                setattr(m, _VALUE_FIELDS[metric.datatype], metric.value)
    return bytes(message.SerializeToString())


def current_amps(metric: Metric) -> float:
    """A `current` metric's value in amperes, or SparkplugError saying what is wrong with it."""
    if metric.datatype not in (DataType.FLOAT, DataType.DOUBLE):
        raise SparkplugError(f"current must be a Float or Double metric (datatype {metric.datatype})",
                             Reason.FIELD_TYPE)
    if not isinstance(metric.value, float) or not math.isfinite(metric.value):
        raise SparkplugError(f"current {metric.value!r} is not a finite number", Reason.NOT_FINITE)
    if metric.value < 0:
        raise SparkplugError(f"current {metric.value} A is negative (a clamp measures magnitude)", Reason.NEGATIVE)
    return metric.value
