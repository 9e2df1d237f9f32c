"""Sparkplug B ingest beside SenML on the same readings, same run (#22).

The fleet has the real shape: 5,000 bridges of 20 sensors (100,000 sensors). Each round
publishes two ticks of every sensor as a backlog for a stopped gateway, in one format,
then times a `wattline gateway` draining it into TimescaleDB; the formats alternate for
`ROUNDS` rounds, and the ratio is the median of the rounds' ratios.
- SenML: one pack per bridge and tick (20 readings).
- Sparkplug B: one DDATA per sensor and tick, by alias, as the simulator's edge nodes send
  (each sensor is a device).
- Sparkplug B, per node: each tick's sweep of a bridge in one NDATA of its edge node
  (`<serial>/current` by alias), the shape SenML has (another group, so its own sessions).
The births come before the first round, untimed: a live gateway reads them, stores every
session, and stops; each timed gateway resumes them.
Rollups are off in both: the same readings queue the same rollup work whatever the wire
format, and this measures what differs.
"""

from __future__ import annotations

import time

import numpy as np
import psycopg

from bench.common import Row, Stack, median, services
from bench.ingest import (
    SENSORS,
    bridges,
    drain_seconds,
    empty,
    gateway_health,
    publish_all,
    seed,
    start_gateway,
    start_on_backlog,
    stop_all,
    wait_healthy,
)
from launcher.localstack import free_port
from sensor_sim.sparkplug import EdgeNode
from wattline.senml import SENML_TOPIC, encode_pack

PER_BRIDGE = 20
TICKS = 2
ROUNDS = 3
T0 = float(int(time.time()) // 10 * 10 - 86400)


def _amps(rng: np.random.Generator, n: int) -> list[float]:
    return [float(a) for a in np.round(rng.uniform(0, 60, n), 3).astype(np.float32)]


def senml(t0: float) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(1)
    return [(SENML_TOPIC.format(bridge=bridge), encode_pack(list(zip(serials, [t0 + 10.0 * k] * len(serials),
                                                                     _amps(rng, len(serials)), strict=True))))
            for k in range(TICKS) for bridge, serials in bridges(PER_BRIDGE)]


WIRES = ("senml", "sparkplug", "sparkplug-node")


def sparkplug(nodes: dict[str, EdgeNode], t0: float) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(1)
    out: list[tuple[str, bytes]] = []
    for k in range(TICKS):
        at_ms = round((t0 + 10.0 * k) * 1000)
        for bridge, serials in bridges(PER_BRIDGE):
            out += nodes[bridge].data(list(zip(serials, [at_ms] * len(serials), _amps(rng, len(serials)), strict=True)))
    return out


def births(stack: Stack, port: int) -> tuple[dict[str, EdgeNode], dict[str, EdgeNode]]:
    """Every edge node born, in both shapes, read by a live gateway and its session stored."""
    devices = {bridge: EdgeNode(bridge) for bridge, _ in bridges(PER_BRIDGE)}
    per_node = {bridge: EdgeNode(bridge, "wattline-node", per_node=True) for bridge, _ in bridges(PER_BRIDGE)}
    gateway = start_gateway(stack, port)
    wait_healthy(port)
    publish_all(stack.publisher_url, [m for nodes in (devices, per_node) for bridge, serials in bridges(PER_BRIDGE)
                                      for m in nodes[bridge].birth([(s, None) for s in serials], int(T0 * 1000))])
    deadline = time.monotonic() + 300
    with psycopg.connect(stack.database_url) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("""SELECT count(*) FROM sparkplug_sessions
                                  WHERE seq = %s OR (group_id = 'wattline-node' AND seq = 0)""",
                               (PER_BRIDGE,)).fetchone()
            if row is not None and row[0] == 2 * len(devices):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("the births were not all read")
    stop_all([gateway])
    return devices, per_node


def drain(stack: Stack, port: int, items: list[tuple[str, bytes]], readings: int, since: float) -> float:
    """Readings/s draining `items`. Then what the broker sends again is read off before the
    next round empties the table: Mosquitto 2.0.11 sends past our Receive Maximum (pinned in
    tests/faults/test_gateway.py) and a backlog larger than it partly comes again, flagged
    DUP, on the next connection (here ~58,000 of 200,000 Sparkplug messages; SenML's
    10,000 packs stay under it). The gateway reads such a redelivery again and stores its
    readings once; with the table emptied in between, they would count as new."""
    gateways = start_on_backlog(stack, [port], items)
    elapsed = drain_seconds(stack, [port], readings, since)
    stop_all(gateways)
    gateways = [start_gateway(stack, port)]
    wait_healthy(port)
    seen = -1
    while (now := int(gateway_health(port)["packs"])) != seen:
        seen = now
        time.sleep(2.0)
    stop_all(gateways)
    return readings / elapsed


def run() -> list[Row]:
    readings = SENSORS * TICKS
    with services() as stack:
        seed(stack, PER_BRIDGE)
        port = free_port()
        devices, per_node = births(stack, port)
        rates: dict[str, list[float]] = {wire: [] for wire in WIRES}
        sizes: dict[str, float] = {}
        for r in range(ROUNDS):
            for k, wire in enumerate(WIRES):
                empty(stack)
                t0 = T0 + 1000.0 * (len(WIRES) * r + k)  # new readings each round
                items = senml(t0) if wire == "senml" else sparkplug(devices if wire == "sparkplug" else per_node, t0)
                sizes[wire] = sum(len(p) for _, p in items) / readings
                rates[wire].append(drain(stack, port, items, readings, t0))
    ratios = [100 * s / m for s, m in zip(rates["sparkplug"], rates["senml"], strict=True)]
    node_ratios = [100 * s / m for s, m in zip(rates["sparkplug-node"], rates["senml"], strict=True)]
    shape = f"{SENSORS:,} sensors on {SENSORS // PER_BRIDGE:,} bridges, {readings:,} readings; rollups off"
    return [
        Row("sparkplug", "SenML: MQTT → committed rows", median(rates["senml"]), "readings/s",
            f"a pack per bridge and tick ({PER_BRIDGE} readings); {shape}"),
        Row("sparkplug", "Sparkplug B: MQTT → committed rows", median(rates["sparkplug"]), "readings/s",
            "a DDATA per sensor and tick, by alias"),
        Row("sparkplug", "Sparkplug B / SenML", median(ratios), "%",
            f"median of the rounds' ratios ({' '.join(f'{x:.0f}' for x in ratios)})"),
        Row("sparkplug", "Sparkplug B per node: MQTT → committed rows", median(rates["sparkplug-node"]),
            "readings/s", f"an NDATA per bridge and tick ({PER_BRIDGE} metrics by alias)"),
        Row("sparkplug", "Sparkplug B per node / SenML", median(node_ratios), "%",
            f"median of the rounds' ratios ({' '.join(f'{x:.0f}' for x in node_ratios)})"),
        Row("sparkplug", "SenML payload per reading", sizes["senml"], "bytes"),
        Row("sparkplug", "Sparkplug B payload per reading", sizes["sparkplug"], "bytes",
            "plus an MQTT header and topic per message"),
        Row("sparkplug", "Sparkplug B per node, payload per reading", sizes["sparkplug-node"], "bytes"),
    ]
