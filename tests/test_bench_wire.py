"""The load generators' own MQTT client (`bench.mqtt_wire`), against the real broker: what a
bench measures is only as good as what it sends."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit, urlunsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.mqtt_wire import PUBACK, QoS1Publisher, packet, publish_packet, split_packets
from tests.fixtures.services import Services
from wattline.senml import SENML_TOPIC


def test_packets_split_however_the_bytes_arrive() -> None:
    big = b"x" * 300  # a two-byte length
    stream = publish_packet(b"t/1", 7, big) + packet(0x40, b"\x00\x07") + packet(0xD0, b"")
    pending, seen = bytearray(), []
    for byte in stream:  # a byte at a time: every cut, inside the length too
        pending.append(byte)
        seen += split_packets(pending)
    assert [kind for kind, _ in seen] == [3, PUBACK, 13]
    assert seen[0][1] == b"\x00\x03t/1\x00\x07" + big
    assert not pending


def test_every_pack_reaches_a_subscriber_once_and_is_acknowledged(mqtt_url: str, gateway_mqtt_url: str) -> None:
    topics = [SENML_TOPIC.format(bridge=f"WIRE-{b}").encode() for b in range(3)]
    sent = [(topics[i % 3], b"pack %d" % i) for i in range(70_000)]  # packet ids wrap past 65,535
    got: list[tuple[bytes, bytes]] = []
    subscribed, done = threading.Event(), threading.Event()
    parts = urlsplit(gateway_mqtt_url)
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="wire-test-sub", protocol=mqtt.MQTTv5)
    if parts.username:
        sub.username_pw_set(parts.username, parts.password)
    sub.on_subscribe = lambda *_: subscribed.set()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        got.append((message.topic.encode(), bytes(message.payload)))
        if len(got) == len(sent):
            done.set()

    sub.on_message = on_message
    sub.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    sub.loop_start()
    try:
        sub.subscribe(SENML_TOPIC.format(bridge="+"), qos=1)
        assert subscribed.wait(10)
        pub = QoS1Publisher(mqtt_url, "wire-test-pub")
        for first in range(0, len(sent), 1000):
            assert pub.publish_many(sent[first:first + 1000]) == len(sent[first:first + 1000])
        pub.close(timeout_s=60)
        assert pub.acked == pub.sent == len(sent)
        assert done.wait(60), f"{len(got)} of {len(sent)} arrived"
        assert sorted(got) == sorted(sent)
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_a_wrong_password_is_refused(services: Services) -> None:
    parts = urlsplit(services.mqtt_url)
    if not parts.username:
        pytest.skip("the environment's broker takes anyone")
    wrong = urlunsplit(parts._replace(netloc=f"{parts.username}:not-it@{parts.hostname}:{parts.port}"))
    with pytest.raises(ConnectionRefusedError, match="refused"):
        QoS1Publisher(wrong, "wire-test-wrong")
