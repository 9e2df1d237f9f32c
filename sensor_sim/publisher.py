"""Publishing the fleet's readings as SenML packs, or as Sparkplug B messages (each bridge
an edge node, each sensor a device), in real time or as a back-fill."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sensor_sim.faults import Faults
from sensor_sim.fleet import Fleet
from sensor_sim.sparkplug import EdgeNode
from sensor_sim.weather import daily_mean_c, hvac_demand
from wattline.senml import SENML_TOPIC, STATUS_TOPIC, encode_pack


@dataclass
class Report:
    ticks: int = 0
    packs_published: int = 0
    readings_generated: int = 0  # distinct (sensor, time) readings the fleet produced
    readings_dropped: int = 0  # lost with dropped or malformed packs
    readings_bad: int = 0  # NaN or negative values in packs that were delivered whole
    packs_duplicated: int = 0
    packs_delayed: int = 0
    packs_malformed: int = 0
    #: readings that a correct gateway must store: generated − dropped − bad
    expected: set[tuple[str, float]] = field(default_factory=set)
    keep_expected: bool = False

    @property
    def readings_deliverable(self) -> int:
        return self.readings_generated - self.readings_dropped - self.readings_bad


def connect(mqtt_url: str, client_id: str) -> mqtt.Client:
    parts = urlsplit(mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if parts.username:
        client.username_pw_set(parts.username, parts.password)
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.will_set(STATUS_TOPIC.format(bridge=client_id), b"offline", qos=1, retain=True)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30, properties=props)
    client.loop_start()
    return client


WIRES = ("senml", "sparkplug", "sparkplug-node")


class Simulator:
    def __init__(self, fleet: Fleet, mqtt_url: str, *, interval_s: float = 10.0, faults: Faults | None = None,
                 seed: int = 11, client_id: str = "wattline-sim", wire: str = "senml",
                 sparkplug_group: str = "wattline") -> None:
        """`wire`: "senml" (a pack per bridge and tick), "sparkplug" (a DDATA per sensor and
        tick, by alias, after births; a host's rebirth request is answered) or
        "sparkplug-node" (the same, each tick's sweep in one NDATA of the edge node's)."""
        if wire not in WIRES:
            raise ValueError(f"wire must be one of {WIRES}")
        faults = faults or Faults()
        if wire != "senml" and (faults.drop_rate or faults.malformed_rate or faults.delay_rate
                                    or faults.offline_bridge):
            # A lost or late message breaks a Sparkplug sequence by design: the host refuses
            # what follows until the rebirth, which a readings count cannot be kept for.
            raise ValueError("over Sparkplug B the simulator models bad values and duplicates, not lost, "
                             "late or malformed messages")
        self.wire = wire
        self.fleet = fleet
        self.interval_s = interval_s
        self.faults = faults
        self.rng = np.random.default_rng(seed)
        self.by_bridge = fleet.sensors_by_bridge()
        self._demand: dict[tuple[int, date], float] = {}  # (site, local day) -> HVAC demand
        self.client = connect(mqtt_url, client_id)
        self._delayed: deque[tuple[int, str, bytes]] = deque()
        self._offline_buffer: list[bytes] = []
        self._pending: list[tuple[str, bytes, mqtt.MQTTMessageInfo]] = []
        self._lock = threading.Lock()  # the tick thread and paho's (rebirth requests) both publish
        self.nodes = {bridge: EdgeNode(bridge, sparkplug_group, per_node=wire == "sparkplug-node")
                      for bridge in self.by_bridge} if wire != "senml" else {}
        self.rebirths = 0
        index = {serial: i for i, serial in enumerate(fleet.serials)}
        self._changes = [(c, np.array([index[s] for s in c.serials], dtype=np.int64))
                         for c in self.faults.load_changes]
        if self.nodes:
            self.client.on_message = self._on_command
            commands = f"spBv1.0/{sparkplug_group}/NCMD/+"
            # paho does not queue a subscription made before the CONNACK: made on (re)connect,
            # and now if that has been already.
            self.client.on_connect = lambda c, *_: c.subscribe(commands, qos=1)
            if self.client.is_connected():
                self.client.subscribe(commands, qos=1)
            for node in self.nodes.values():
                self._birth(node)
            return
        for bridge in self.by_bridge:
            self.client.publish(STATUS_TOPIC.format(bridge=bridge), b"online", qos=1, retain=True)

    def _birth(self, node: EdgeNode) -> None:
        """Births with no current values (null metrics): readings come only with ticks."""
        with self._lock:
            serials = [self.fleet.serials[i] for i in self.by_bridge[node.bridge]]
            for topic, payload in node.birth([(serial, None) for serial in serials], int(time.time() * 1000)):
                self._send(topic, payload)

    def _on_command(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        for node in self.nodes.values():
            if node.rebirth_asked(message.topic, bytes(message.payload)):
                self.rebirths += 1
                self._birth(node)

    def close(self) -> None:
        with self._lock:
            for node in self.nodes.values():
                self._send(*node.death())
        self.flush()
        self.client.loop_stop()
        self.client.disconnect()

    def flush(self, timeout_s: float = 120.0) -> None:
        """Wait until the broker has acknowledged every pack. Like a bridge, ride out a broker
        restart: a pack the client could not even send (no connection) is sent again once
        it is back; one sent but unacknowledged, paho re-sends itself on reconnect."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            pending, self._pending = self._pending, []
        while pending:
            topic, payload, info = pending.pop(0)
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError("the broker did not acknowledge every pack")
                try:
                    if info.is_published():
                        break
                except RuntimeError:  # never left: not connected when published
                    if self.nodes:
                        # paho keeps it and sends it in its turn once connected; sent again
                        # here, after what followed it, it would break the edge node's sequence.
                        if info._published:
                            break
                        time.sleep(0.002)
                        continue
                    while not self.client.is_connected() and time.monotonic() < deadline:
                        time.sleep(0.05)
                    info = self.client.publish(topic, payload, qos=1)
                    continue
                time.sleep(0.002)

    def _send(self, topic: str, payload: bytes) -> None:
        self._pending.append((topic, payload, self.client.publish(topic, payload, qos=1)))

    def _publish(self, bridge: str, payload: bytes, report: Report) -> None:
        with self._lock:
            self._send(SENML_TOPIC.format(bridge=bridge), payload)
        report.packs_published += 1
        if len(self._pending) >= 1000:
            self.flush()

    def _publish_sparkplug(self, bridge: str, readings: list[tuple[str, int, float]], report: Report) -> None:
        """One DDATA per reading, each sent twice at the duplicate rate (a QoS 1 redelivery)."""
        with self._lock:
            for topic, payload in self.nodes[bridge].data(readings):
                self._send(topic, payload)
                report.packs_published += 1
                if self.faults.duplicate_rate and self.rng.random() < self.faults.duplicate_rate:
                    self._send(topic, payload)
                    report.packs_duplicated += 1
        if len(self._pending) >= 1000:
            self.flush()

    def _weather(self, t: float) -> npt.NDArray[np.float64]:
        """Each site's HVAC demand at t, from its local day's simulated mean temperature."""
        out = np.empty(len(self.fleet.sites))
        for i, site in enumerate(self.fleet.sites):
            day = datetime.fromtimestamp(t, ZoneInfo(site.timezone)).date()
            if (i, day) not in self._demand:
                self._demand[(i, day)] = float(hvac_demand(daily_mean_c(site.latitude, [day]))[0])
            out[i] = self._demand[(i, day)]
        return out

    def tick(self, t: float, report: Report) -> None:
        f = self.faults
        amps = self.fleet.readings_at(t, self.rng, self._weather(t))
        silent = self._apply_load_changes(t, amps)
        for bridge, idx in self.by_bridge.items():
            if silent is not None:
                idx = idx[~silent[idx]]
                if len(idx) == 0:
                    continue
            values = np.round(amps[idx], 3)
            serials = [self.fleet.serials[i] for i in idx]
            report.readings_generated += len(idx)
            bad = np.zeros(len(idx), dtype=bool)
            if f.bad_value_rate:
                bad = self.rng.random(len(idx)) < f.bad_value_rate
                # Half negative, half NaN; orjson writes NaN as null, as lax firmware does.
                values = np.where(bad, np.where(self.rng.random(len(idx)) < 0.5, -1.0, math.nan), values)
                report.readings_bad += int(bad.sum())
            if report.keep_expected:
                report.expected.update((s, t) for s, b in zip(serials, bad, strict=True) if not b)
            if self.nodes:
                at_ms = round(t * 1000)
                self._publish_sparkplug(bridge, [(s, at_ms, v) for s, v in zip(serials, values.tolist(), strict=True)],
                                        report)
                continue
            payload = encode_pack(list(zip(serials, [t] * len(idx), values.tolist(), strict=True)))
            if f.offline_bridge == bridge and f.offline_after_ticks <= report.ticks < (
                    f.offline_after_ticks + f.offline_for_ticks):
                if report.ticks == f.offline_after_ticks:
                    self.client.publish(STATUS_TOPIC.format(bridge=bridge), b"offline", qos=1, retain=True)
                self._offline_buffer.append(payload)
                continue
            if f.offline_bridge == bridge and self._offline_buffer:
                self.client.publish(STATUS_TOPIC.format(bridge=bridge), b"online", qos=1, retain=True)
                for buffered in self._offline_buffer:
                    self._publish(bridge, buffered, report)
                self._offline_buffer.clear()
            if f.drop_rate and self.rng.random() < f.drop_rate:
                report.readings_dropped += int((~bad).sum())
                report.readings_bad -= int(bad.sum())  # never arrive, so never rejected
                if report.keep_expected:
                    report.expected.difference_update((s, t) for s in serials)
                continue
            if f.malformed_rate and self.rng.random() < f.malformed_rate:
                report.packs_malformed += 1
                report.readings_dropped += int((~bad).sum())
                report.readings_bad -= int(bad.sum())  # rejected with their pack
                if report.keep_expected:
                    report.expected.difference_update((s, t) for s in serials)
                self._publish(bridge, payload[: len(payload) // 2], report)
                continue
            if f.delay_rate and self.rng.random() < f.delay_rate:
                report.packs_delayed += 1
                release = report.ticks + int(self.rng.integers(1, f.max_delay_packs + 1))
                self._delayed.append((release, bridge, payload))
            else:
                self._publish(bridge, payload, report)
            if f.duplicate_rate and self.rng.random() < f.duplicate_rate:
                report.packs_duplicated += 1
                self._publish(bridge, payload, report)
        for _ in range(len(self._delayed)):
            release, bridge, payload = self._delayed.popleft()
            if release <= report.ticks:
                self._publish(bridge, payload, report)
            else:
                self._delayed.append((release, bridge, payload))
        report.ticks += 1

    def _apply_load_changes(self, t: float, amps: np.ndarray) -> np.ndarray | None:
        """Scale, re-cycle or silence the sensors of each active load change, in place;
        returns the mask of silent sensors, or None when none is."""
        silent: np.ndarray | None = None
        for change, idx in self._changes:
            if not change.active(t):
                continue
            if change.cycle_period_s is not None:
                on = ((t + self.fleet.offset_s[idx]) % change.cycle_period_s) < 0.45 * change.cycle_period_s
                amps[idx] = np.where(on, 0.7, 0.03) * self.fleet.rated_a[idx]
            amps[idx] = amps[idx] * change.factor + change.offset_a
            if change.silent:
                silent = np.zeros(len(amps), dtype=bool) if silent is None else silent
                silent[idx] = True
        return silent

    def drain(self, report: Report) -> None:
        """Send whatever faults held back (delayed packs, an offline bridge's buffer)."""
        for _, bridge, payload in self._delayed:
            self._publish(bridge, payload, report)
        self._delayed.clear()
        if self._offline_buffer and self.faults.offline_bridge:
            for buffered in self._offline_buffer:
                self._publish(self.faults.offline_bridge, buffered, report)
            self._offline_buffer.clear()
        self.flush()

    def backfill(self, start: float, end: float, report: Report | None = None) -> Report:
        """Every tick from start to end, as fast as the broker takes them."""
        report = report or Report()
        t = start
        while t < end:
            self.tick(t, report)
            t += self.interval_s
        self.drain(report)
        return report

    def run_realtime(self, stop_after_s: float | None = None, report: Report | None = None) -> Report:
        report = report or Report()
        began = time.time()
        next_t = math.ceil(began / self.interval_s) * self.interval_s
        while stop_after_s is None or time.time() - began < stop_after_s:
            delay = next_t - time.time()
            if delay > 0:
                time.sleep(delay)
            self.tick(next_t, report)
            self.flush()
            next_t += self.interval_s
        self.drain(report)
        return report
