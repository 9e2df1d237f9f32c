"""`python -m bench fleet`: 10,000 bridges at once, then a broker restart (#21).

Each bridge is its own MQTT connection with its own sign-in (the dynamic-security plugin
holds 10,000 clients), keep-alive 60 s and a last will, and sends its 30 sensors every
10 s. Once all are in and steady, the broker is stopped and started again (down
`DOWN_S`). The bench reports how long the bridges took to come back, readings sent,
stored and doubled, how many bridges the broker sync paused, how many bridge-offline
alerts the real alert pass raised (a rule with a 1-minute hold on every site), and the
gateway's and broker's memory.

The bridges are a small asyncio MQTT 3.1.1 client (`FleetBridge`): paho costs too much
per connection to hold 10,000 in one process. It behaves as firmware does: a pack stays in
the bridge until the broker acknowledges it (resent, marked DUP, after a reconnect), packs
made while the broker is away wait their turn, and a lost connection is retried with
jittered exponential back-off (0.25 s doubling to 30 s, each wait drawn from its upper half).
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil
import psycopg

from alerts.rules import BridgeOffline
from alerts.scheduler import run_pass
from alerts.store import create_rule
from bench.common import Row, Stack, percentile, services
from bench.ingest import start_gateway, wait_healthy
from bench.mqtt_wire import KEEPALIVE_S, PUBACK, packet, publish_packet, split_packets
from bench.mqtt_wire import field as wire_field
from ingest.broker_security import write_initial_config
from wattline import bridge_credentials, catalogue
from wattline.bridge_credentials import BrokerChange
from wattline.senml import SENML_TOPIC, STATUS_TOPIC, encode_pack
from wattline.settings import Settings
from wattline.site_builder import build_tenant

BRIDGES = int(os.environ.get("WATTLINE_BENCH_BRIDGES", "10000"))
SENSORS, PERIOD_S, PER_SITE = 30, 10.0, 500
DOWN_S = 5.0
STEADY_S = 40.0


def connect_packet(client_id: str, password: str) -> bytes:
    will = STATUS_TOPIC.format(bridge=client_id).encode()
    # username, password, will retain, will QoS 1, will, persistent session (clean = 0)
    flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04
    return packet(0x10, wire_field(b"MQTT") + bytes([4, flags]) + struct.pack("!H", KEEPALIVE_S)
                   + wire_field(client_id.encode()) + wire_field(will) + wire_field(b"offline")
                   + wire_field(client_id.encode()) + wire_field(password.encode()))


@dataclass
class FleetBridge:
    serial: str
    password: str
    offset_s: float  # where in the 10 s its sweep falls
    unacked: dict[int, bytes] = field(default_factory=dict)  # pid -> PUBLISH, resent after a reconnect
    writer: asyncio.StreamWriter | None = None
    next_pid: int = 0
    connects: list[float] = field(default_factory=list)  # wall time of each accepted connection
    surprises: list[str] = field(default_factory=list)
    ticks: list[float] = field(default_factory=list)  # the time of each pack made

    @property
    def sent(self) -> int:
        """Readings made."""
        return SENSORS * len(self.ticks)

    def _pid(self) -> int:
        self.next_pid = self.next_pid % 65535 + 1
        return self.next_pid

    def _send(self, topic: bytes, payload: bytes, *, retain: bool = False) -> None:
        pid = self._pid()
        self.unacked[pid] = publish_packet(topic, pid, payload, retain=retain)
        if self.writer is not None:
            self.writer.write(self.unacked[pid])

    async def produce(self, stop: asyncio.Event, start: float) -> None:
        topic = SENML_TOPIC.format(bridge=self.serial).encode()
        serials = [f"{self.serial}-{k:02d}" for k in range(SENSORS)]
        tick = start + self.offset_s
        rng = random.Random(self.serial)
        while not stop.is_set():
            await asyncio.sleep(max(0.0, tick - time.time()))
            if stop.is_set():
                return
            self._send(topic, encode_pack([(s, tick, round(rng.uniform(0.5, 60.0), 3)) for s in serials]))
            self.ticks.append(tick)
            tick += PERIOD_S

    async def connection(self, host: str, port: int, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                pass
            else:
                try:
                    writer.write(connect_packet(self.serial, self.password))
                    connack = await asyncio.wait_for(reader.readexactly(4), 30)
                    if connack[0] == 0x20 and connack[3] == 0:
                        attempt = 0
                        self.connects.append(time.time())
                        for packet in list(self.unacked.values()):
                            writer.write(bytes([packet[0] | 0x08]) + packet[1:])  # DUP
                        self.writer = writer
                        self._send(STATUS_TOPIC.format(bridge=self.serial).encode(), b"online", retain=True)
                        await self._read(reader, stop)
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    pass  # the broker went away or never answered: back off and try again
                except Exception as exc:  # a bridge's loop never dies; what it met is reported
                    self.surprises.append(repr(exc))
                finally:
                    self.writer = None
                    writer.close()
            if stop.is_set():
                return
            attempt += 1
            ceiling = min(30.0, 0.25 * 2 ** attempt)
            await asyncio.sleep(random.uniform(ceiling / 2, ceiling))

    async def _read(self, reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
        pending = bytearray()
        while not stop.is_set():
            chunk = await reader.read(1 << 16)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(pending), None)  # the broker went away
            pending += chunk
            for kind, body in split_packets(pending):
                if kind == PUBACK:  # the broker has the pack
                    self.unacked.pop(struct.unpack("!H", body[:2])[0], None)


async def run_fleet(bridges: list[FleetBridge], port: int, stop: asyncio.Event, producing: asyncio.Event,
                    ramp_s: float) -> None:
    start = time.time() // PERIOD_S * PERIOD_S + PERIOD_S
    tasks = []
    for i, b in enumerate(bridges):
        tasks.append(asyncio.create_task(_delayed(b.connection("127.0.0.1", port, stop), ramp_s * i / len(bridges))))
    produce_stop = asyncio.Event()
    tasks += [asyncio.create_task(b.produce(produce_stop, start)) for b in bridges]
    await producing.wait()
    produce_stop.set()
    await until(lambda: not any(b.unacked for b in bridges), 300)  # every pack delivered before the sessions end
    stop.set()
    for b in bridges:
        if b.writer is not None:
            b.writer.write(b"\xe0\x00")  # DISCONNECT: a clean goodbye, no will
    await asyncio.gather(*tasks, return_exceptions=True)


async def until(condition: Callable[[], bool], timeout_s: float) -> None:
    """Wait until `condition` holds, looking twice a second, for at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.5)


async def _delayed(coro: Coroutine[Any, Any, None], delay: float) -> None:
    await asyncio.sleep(delay)
    await coro


def seed(stack: Stack) -> tuple[list[FleetBridge], list[int]]:
    """BRIDGES bridges, 500 to a site, registered through the catalogue (each gets its
    sign-in); the broker is rebuilt with all of them at once."""
    key = Settings().bridge_credential_key
    claim_key = Settings().claim_key
    changes: list[BrokerChange] = []
    fleet: list[FleetBridge] = []
    sites: list[int] = []
    rng = random.Random(21)
    with psycopg.connect(stack.database_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        _, customer = build_tenant(conn, "bench", "bench")
        for i in range(BRIDGES):
            if i % PER_SITE == 0:
                sites.append(catalogue.upsert_site(conn, customer, f"Fleet site {len(sites)}",
                                                   timezone="Europe/London"))
            serial = f"FB{i:05d}"
            _, credential = catalogue.register_bridge(conn, None, sites[-1], serial, claim_code=catalogue.
                                                      bridge_claim_code(serial, claim_key), claim_key=claim_key,
                                                      credential_key=key)
            assert credential is not None
            changes.append(BrokerChange(serial, credential.generation, credential.password))
            fleet.append(FleetBridge(serial, credential.password, rng.uniform(0, PERIOD_S)))
        stack.mosquitto.stop()
        (stack.mosquitto.data_dir / "dynamic-security.json").unlink()
        write_initial_config(stack.mosquitto.data_dir / "dynamic-security.json",
                             stack.mosquitto.service_passwords(), bridges=changes)
        stack.mosquitto.start()
        for change in changes:
            bridge_credentials.mark_applied(conn, change)
        for site in sites:
            create_rule(conn, site, None, "Bridge offline", BridgeOffline(hold_minutes=1))
    return fleet, sites


def _near(times: list[float], t: float) -> bool:
    return any(abs(x - t) < 1e-3 for x in times)


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def run() -> list[Row]:
    from launcher.localstack import free_port

    with services() as stack:
        started = time.monotonic()
        fleet, sites = seed(stack)
        seeded_s = time.monotonic() - started
        gw_port, sync_port = free_port(), free_port()
        # One gateway on a plain subscription, as `wattline up` runs it: Mosquitto 2.0 drops
        # what a shared group's member is sent while it reconnects after a broker restart.
        gateway = start_gateway(stack, gw_port, share_group="")
        wait_healthy(gw_port)
        sync = subprocess.Popen(
            [sys.executable, "-m", "launcher.cli", "broker-sync"],
            env={**os.environ, "WATTLINE_DATABASE_URL": stack.database_url,
                 "WATTLINE_MQTT_ADMIN_URL": stack.mosquitto.url_for("admin"),
                 "WATTLINE_BROKER_SYNC_HEALTH_PORT": str(sync_port)},
            stdout=subprocess.DEVNULL, stderr=(stack.root / "broker-sync.log").open("ab"))
        stop, producing_done = asyncio.Event(), asyncio.Event()
        report: dict[str, float] = {}
        me = psutil.Process()
        cpu0 = sum(me.cpu_times()[:2])

        async def scenario() -> None:
            fleet_task = asyncio.create_task(run_fleet(fleet, stack.mosquitto.port, stop, producing_done, 20.0))
            await until(lambda: all(b.writer is not None for b in fleet), 120)
            report["connected_before"] = sum(1 for b in fleet if b.writer is not None)
            await asyncio.sleep(STEADY_S)
            assert stack.mosquitto._proc is not None
            report["gateway_mb"] = _rss_mb(gateway.pid)
            report["broker_mb"] = _rss_mb(stack.mosquitto._proc.pid)
            # The broker goes away and comes back.
            restart_at = time.time()
            report["restart_at"] = restart_at
            await asyncio.to_thread(stack.mosquitto.stop)
            await asyncio.sleep(DOWN_S)
            back_at = time.time()  # before the start: a bridge may be in as soon as the port opens
            await asyncio.to_thread(stack.mosquitto.start)
            report["down_s"] = back_at - restart_at
            await until(lambda: all(b.connects[-1] > back_at for b in fleet if b.connects), 90)
            returns = [min([t for t in b.connects if t > back_at], default=float("inf")) - back_at for b in fleet]
            report["returned"] = sum(1 for r in returns if r < float("inf"))
            report["return_p50"] = percentile(returns, 50)
            report["return_p99"] = percentile(returns, 99)
            report["return_max"] = max(returns)
            await asyncio.sleep(max(0.0, back_at + 75 - time.time()))  # past the rule's 1-minute hold
            report["gateway_mb_after"] = _rss_mb(gateway.pid)
            report["broker_mb_after"] = _rss_mb(stack.mosquitto._proc.pid)
            producing_done.set()
            await fleet_task

        asyncio.run(scenario())
        report["fleet_cpu"] = sum(me.cpu_times()[:2]) - cpu0
        sent = sum(b.sent for b in fleet)
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            deadline = time.monotonic() + 180
            stored = 0
            while time.monotonic() < deadline:
                row = conn.execute("SELECT count(*) FROM readings").fetchone()
                stored = int(row[0]) if row else 0
                if stored >= sent:
                    break
                time.sleep(1)
            distinct_row = conn.execute("SELECT count(DISTINCT (sensor_id, ts)) FROM readings").fetchone()
            distinct = int(distinct_row[0]) if distinct_row else 0
            # Which packs are missing, by when they were made (each bridge's first sensor stands
            # for its pack; stored times are microseconds, so a match is within 1 ms).
            stored_at: dict[str, list[float]] = {}
            for serial, ts in conn.execute("""SELECT s.serial, extract(epoch FROM r.ts)::float8 FROM readings r
                                              JOIN sensors s ON s.id = r.sensor_id WHERE s.serial LIKE '%%-00'"""):
                stored_at.setdefault(serial[:-3], []).append(ts)
            missing = sorted(t - report["restart_at"] for b in fleet for t in b.ticks
                             if not _near(stored_at.get(b.serial, []), t))
            rejected = conn.execute("SELECT reason, count(*) FROM rejected_readings GROUP BY 1").fetchall()
            paused_row = conn.execute("SELECT coalesce(sum(pauses), 0) FROM bridge_credentials").fetchone()
            paused = int(paused_row[0]) if paused_row else 0
        with psycopg.connect(stack.database_url, autocommit=True) as aconn, httpx.Client() as http:
            alerts = run_pass(aconn, Settings(database_url=stack.database_url), http, datetime.now(UTC))
        metrics = httpx.get(f"http://127.0.0.1:{gw_port}/metrics", timeout=10).text
        redelivered = sum(float(line.split()[-1]) for line in metrics.splitlines()
                          if line.startswith("wattline_gateway_readings_duplicate_total"))
        for proc in (sync, gateway):
            proc.terminate()
            proc.wait(60)

    shape = f"{BRIDGES:,} bridges × {SENSORS} sensors every {PERIOD_S:.0f} s, {len(sites)} sites"
    return [
        Row("fleet", "bridges signed in before the restart", report["connected_before"], "bridges", shape),
        Row("fleet", "seeding (register + broker file)", seeded_s, "s"),
        Row("fleet", "bridges back after the broker restart", report["returned"], "bridges",
            f"broker down {report['down_s']:.1f} s"),
        Row("fleet", "time back after the restart p50", report["return_p50"], "s", "target: all within 60 s"),
        Row("fleet", "time back after the restart p99", report["return_p99"], "s"),
        Row("fleet", "time back after the restart, last bridge", report["return_max"], "s"),
        Row("fleet", "readings sent", float(sent), "readings"),
        Row("fleet", "readings lost", float(sent - distinct), "readings", "sent − distinct stored"),
        Row("fleet", "packs missing", float(len(missing)), "packs",
            f"made {missing[0]:.1f} … {missing[-1]:.1f} s after the restart began" if missing else ""),
        Row("fleet", "readings doubled", float(stored - distinct), "readings",
            f"stored − distinct; {redelivered:,.0f} delivered again and dropped by the (sensor, ts) key"),
        Row("fleet", "packs rejected", float(sum(n for _, n in rejected)), "packs",
            ", ".join(f"{reason}: {n}" for reason, n in rejected)),
        Row("fleet", "bridges paused for reconnecting", float(paused), "bridges", "each came back once"),
        Row("fleet", "bridge-offline alerts raised", float(alerts.raised), "alerts",
            f"{len(sites)} rules, 1-minute hold, evaluated after the restart"),
        Row("fleet", "gateway memory (steady / after)", report["gateway_mb"], "MiB",
            f"after the restart {report['gateway_mb_after']:.0f} MiB"),
        Row("fleet", "broker memory (steady / after)", report["broker_mb"], "MiB",
            f"after the restart {report['broker_mb_after']:.0f} MiB"),
        Row("fleet", "bridges' unexpected errors", float(sum(len(b.surprises) for b in fleet)), "errors",
            "; ".join(sorted({e for b in fleet for e in b.surprises}))[:120]),
        Row("fleet", "the fleet's own CPU (10,000 clients)", report["fleet_cpu"], "CPU s", "the bench process"),
    ]

