"""End-to-end ingest: MQTT → committed rows, beside two ceilings measured in the same run.

- Mosquitto alone: a QoS 1 subscriber that does nothing drains the same backlog of packs.
- Raw binary COPY alone: the same rows COPYed straight into the readings hypertable.
- The gateway (a `wattline gateway` process, rollups off) drains that backlog into
  TimescaleDB, validating, de-duplicating and queueing rollup work on the way.
The COPY ceiling and the gateway alternate for `ROUNDS` rounds on an emptied table, and
the ratio is the median of the rounds' ratios: on a shared 2-core machine one sample of
each moved the ratio between 62 % and 90 % from run to run.
Then the simulator publishes in real time at half the measured rate to read the
sensor-to-row latency, and the gateway's RSS is read with 100,000 sensors known.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import paho.mqtt.client as mqtt
import psutil
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.common import Row, Stack, median, percentile, services
from ingest.copy import encode_readings
from wattline.senml import SENML_TOPIC, encode_pack

SENSORS = 100_000
PER_BRIDGE = 500
TICKS = 20  # 2 M readings in the backlog
ROUNDS = 3
T0 = float(int(time.time()) // 10 * 10 - 3600)


def bridges(per_bridge: int = PER_BRIDGE) -> list[tuple[str, list[str]]]:
    out = []
    for b in range(SENSORS // per_bridge):
        out.append((f"BR-{b:05d}", [f"CT{b:05d}{k:04d}" for k in range(per_bridge)]))
    return out


def seed(stack: Stack, per_bridge: int = PER_BRIDGE) -> None:
    """One site with every bridge, and every sensor already known (discovery is not timed)."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO resellers (name) VALUES ('bench')")
        conn.execute("INSERT INTO customers (reseller_id, name) VALUES (1, 'bench')")
        conn.execute("INSERT INTO sites (customer_id, name) VALUES (1, 'bench')")
        conn.execute("""INSERT INTO bridges (serial, site_id)
                        SELECT 'BR-' || lpad(b::text, 5, '0'), 1 FROM generate_series(0, %s) b""",
                     (SENSORS // per_bridge - 1,))
        conn.execute("""INSERT INTO sensors (serial, bridge_id, first_seen_at)
                        SELECT 'CT' || lpad((s / %s)::text, 5, '0') || lpad((s %% %s)::text, 4, '0'),
                               s / %s + 1, now()
                        FROM generate_series(0, %s) s""", (per_bridge, per_bridge, per_bridge, SENSORS - 1))


def packs(ticks: int, start: float, per_bridge: int = PER_BRIDGE) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(1)
    out = []
    groups = bridges(per_bridge)
    for tick in range(ticks):
        t = start + tick * 10.0
        for bridge, serials in groups:
            amps = np.round(rng.uniform(0, 60, len(serials)), 3).tolist()
            out.append((SENML_TOPIC.format(bridge=bridge), encode_pack(list(zip(serials, [t] * len(serials), amps,
                                                                                 strict=True)))))
    return out


def client(url: str, client_id: str, *, clean: bool) -> mqtt.Client:
    parts = urlsplit(url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if parts.username:
        c.username_pw_set(parts.username, unquote(parts.password or ""))
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0 if clean else 3600
    c.connect("127.0.0.1", parts.port or 1883, properties=props, clean_start=clean)
    return c


def publish_all(url: str, items: list[tuple[str, bytes]], window: int = 5000) -> None:
    """Publish at QoS 1, `window` packs at a time: at 10 readings a pack the backlog is
    200,000 messages, and queueing them all at once outran paho's client."""
    c = client(url, "bench-publisher", clean=True)
    c.loop_start()
    for i in range(0, len(items), window):
        infos = [c.publish(topic, payload, qos=1) for topic, payload in items[i:i + window]]
        for info in infos:
            info.wait_for_publish(120)
    c.loop_stop()
    c.disconnect()


def mosquitto_ceiling(stack: Stack, items: list[tuple[str, bytes]], readings: int) -> float:
    """A null subscriber's persistent session receives the backlog: readings/s."""
    sub = client(stack.mqtt_url, "bench-null", clean=False)
    sub.subscribe("$share/null/wattline/v1/bridges/+/senml", qos=1)
    sub.loop(1.0)
    sub.disconnect()
    publish_all(stack.publisher_url, items)
    done = threading.Event()
    got = [0]

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        got[0] += 1
        if got[0] >= len(items):
            done.set()

    sub = client(stack.mqtt_url, "bench-null", clean=False)
    sub.on_message = on_message
    started = time.perf_counter()
    sub.loop_start()
    done.wait(300)
    elapsed = time.perf_counter() - started
    sub.loop_stop()
    sub.disconnect()
    # End the null session: left subscribed, it queued a copy of everything the later
    # rounds published (Mosquitto's queues are unbounded here, as the gateway needs): ~10 M
    # readings, 640 MB in the broker, which slowed the rounds and the latency run.
    end = client(stack.mqtt_url, "bench-null", clean=True)
    end.loop(1.0)
    end.disconnect()
    return readings / elapsed


def copy_ceiling(stack: Stack, readings: int, batch: int = 100_000, streams: int = 1) -> float:
    """The same number of rows, binary COPY straight into the hypertable, no staging; with
    `streams` connections COPYing disjoint halves at once (the ceiling N gateways face)."""
    ids = np.tile(np.arange(1, SENSORS + 1, dtype=np.int64), readings // SENSORS)
    ts = np.repeat(T0 - 86400 + np.arange(readings // SENSORS) * 10.0, SENSORS)
    amps = np.random.default_rng(2).uniform(0, 60, readings).astype(np.float32)
    # Measured voltage, power factor and RSSI (the table's checks refuse NaN; production
    # turns NaN into NULL in the INSERT … SELECT): same row width either way.
    volts = np.full(readings, 230.0, dtype=np.float32)
    pf = np.full(readings, 0.9, dtype=np.float32)
    rssi = np.full(readings, -70.0, dtype=np.float32)
    no_power = np.full(readings, np.nan, dtype=np.float32)  # clamps: as the gateway writes them
    bridge = (ids - 1) // PER_BRIDGE + 1
    chunks = [encode_readings(ids[i:i + batch], ts[i:i + batch], amps[i:i + batch], volts[i:i + batch],
                              pf[i:i + batch], rssi[i:i + batch], no_power[i:i + batch], bridge[i:i + batch])
              for i in range(0, readings, batch)]

    def copy(mine: list[bytes]) -> None:
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            for data in mine:
                with conn.transaction(), conn.cursor() as cur, cur.copy(
                        "COPY readings (sensor_id, ts, current_a, voltage_v, power_factor, rssi_dbw, bridge_id) "
                        "FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(data)

    workers = [threading.Thread(target=copy, args=(chunks[k::streams],)) for k in range(streams)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    empty(stack)
    return readings / elapsed


def gateway_env(stack: Stack, port: int, n: int = 0, share_group: str = "bench") -> dict[str, str]:
    """Gateway n's environment; `share_group` "" for one gateway on a plain subscription."""
    return {**os.environ, "WATTLINE_DATABASE_URL": stack.database_url, "WATTLINE_MQTT_URL": stack.mqtt_url,
            "WATTLINE_GATEWAY_METRICS_PORT": str(port), "WATTLINE_SPOOL_DIR": str(stack.root / f"spool{n}"),
            "WATTLINE_MQTT_CLIENT_ID": f"bench-gateway-{n}", "WATTLINE_MAX_READING_AGE_DAYS": "3650",
            "WATTLINE_MQTT_SHARE_GROUP": share_group}


def start_gateway(stack: Stack, port: int, n: int = 0, share_group: str = "bench") -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "launcher.cli", "gateway", "--no-rollups"],
                            env=gateway_env(stack, port, n, share_group), stdout=subprocess.DEVNULL,
                            stderr=(stack.root / "gateway.log").open("ab"))


def leave(stack: Stack, port: int, n: int) -> None:
    """`wattline gateway --leave` for gateway n: its session leaves the shared group."""
    subprocess.run([sys.executable, "-m", "launcher.cli", "gateway", "--leave"], env=gateway_env(stack, port, n),
                   check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_all(gateways: list[subprocess.Popen[bytes]]) -> None:
    for gw in gateways:
        gw.terminate()
        gw.wait(30)


def start_on_backlog(stack: Stack, ports: list[int], items: list[tuple[str, bytes]]) -> list[subprocess.Popen[bytes]]:
    """Gateways 0…n-1 on `ports`, started with `items` already waiting for them: each first
    makes its persistent session and subscription and stops, then the backlog is published."""
    stop_all(_started_and_healthy(stack, ports))
    publish_all(stack.publisher_url, items)  # the backlog waits in the broker for the gateways
    return _started_and_healthy(stack, ports)


def _started_and_healthy(stack: Stack, ports: list[int]) -> list[subprocess.Popen[bytes]]:
    gateways = [start_gateway(stack, port, i) for i, port in enumerate(ports)]
    for port in ports:
        wait_healthy(port)
    return gateways


def wait_healthy(port: int, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("gateway did not become healthy")


def gateway_health(port: int) -> dict[str, Any]:
    import httpx

    return dict(httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json())


def stored_by(ports: list[int]) -> int:
    """Readings the gateways on these ports have committed (their /health counters)."""
    return sum(int(gateway_health(p)["stored"]) for p in ports)


def count(stack: Stack, since: float | None = None) -> int:
    """Rows in `readings` (from `since`, Unix s, if given: older rows may be another test's)."""
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM readings WHERE ts >= to_timestamp(%s)",
                           (since if since is not None else 0.0,)).fetchone()
        return int(row[0]) if row else 0


def drain_seconds(stack: Stack, ports: list[int], readings: int, since: float | None = None) -> float:
    """Seconds until the gateways on `ports` have committed `readings`, checked exactly after.
    Polls their own counters: a count(*) every 50 ms of a table growing to millions of rows
    spent the database's CPU on the measurement (it cost ~15 % of the rate)."""
    started = time.perf_counter()
    while stored_by(ports) < readings:
        time.sleep(0.05)
        if time.perf_counter() - started > 600:
            raise RuntimeError("the gateways did not drain the backlog")
    elapsed = time.perf_counter() - started
    if count(stack, since) != readings:
        raise RuntimeError(f"stored {count(stack, since):,} rows, expected {readings:,}")
    return elapsed


def gateway_throughput(stack: Stack, items: list[tuple[str, bytes]], readings: int, port: int,
                       since: float | None = None) -> tuple[float, float]:
    gateways = start_on_backlog(stack, [port], items)
    elapsed = drain_seconds(stack, [port], readings, since)
    rss = psutil.Process(gateways[0].pid).memory_info().rss
    stop_all(gateways)
    return readings / elapsed, rss


def empty(stack: Stack) -> None:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, rollup_dirty")


def bytes_per_reading(stack: Stack) -> float:
    """On disk per stored reading, heap and indexes (what sizing the raw tier needs)."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE readings")
        row = conn.execute("SELECT hypertable_size('readings')::float8 / count(*) FROM readings").fetchone()
        return float(row[0]) if row else 0.0


def latency(stack: Stack, rate: float, port: int, seconds: float = 30.0) -> tuple[float, float, int]:
    """Publish in real time at `rate` readings/s; sensor time to row written, p50/p99.
    Starts from a checkpoint, as pgbench does: the rounds before it wrote ~10 M rows, and
    their checkpoint would otherwise land in these 30 s (the soak bench covers checkpoints)."""
    empty(stack)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    gw = start_gateway(stack, port)
    wait_healthy(port)
    interval = max(0.5, SENSORS / rate)
    pub = client(stack.publisher_url, "bench-live", clean=True)
    pub.loop_start()
    rng = np.random.default_rng(3)
    groups = bridges()
    next_t = time.time() // 1 + 1
    end = next_t + seconds
    while next_t < end:
        time.sleep(max(0.0, next_t - time.time()))
        for bridge, serials in groups:
            amps = np.round(rng.uniform(0, 60, len(serials)), 3).tolist()
            pub.publish(SENML_TOPIC.format(bridge=bridge),
                        encode_pack(list(zip(serials, [next_t] * len(serials), amps, strict=True))), qos=1)
        next_t += interval
    time.sleep(3)
    pub.loop_stop()
    pub.disconnect()
    gw.terminate()
    gw.wait(30)
    with psycopg.connect(stack.database_url) as conn:
        lat = [r[0] for r in conn.execute(
            "SELECT extract(epoch FROM received_at - ts)::float8 FROM readings TABLESAMPLE SYSTEM (5)")]
    return percentile(lat, 50), percentile(lat, 99), len(lat)


def drain_shared(stack: Stack, n: int, ports: list[int], items: list[tuple[str, bytes]],
                 readings: int) -> tuple[float, int, int]:
    """n gateways on one shared subscription drain `items` (`readings` in all) from an empty
    table: (readings/s, stored, handled twice)."""
    empty(stack)
    # Scaling down: members of the group beyond n leave it, or the broker would keep routing
    # them a share of the backlog that nobody takes (their sessions outlive their processes).
    for i in range(n, len(ports)):
        leave(stack, ports[i], i)
    gateways = start_on_backlog(stack, ports[:n], items)
    elapsed = drain_seconds(stack, ports[:n], readings)
    time.sleep(0.5)
    shares = [gateway_health(port) for port in ports[:n]]
    stop_all(gateways)
    return readings / elapsed, sum(h["stored"] for h in shares), sum(h["duplicates"] for h in shares)


def run() -> list[Row]:
    from launcher.localstack import free_port

    rows: list[Row] = []
    readings = SENSORS * TICKS
    with services() as stack:
        seed(stack)
        items = packs(TICKS, T0)
        port = free_port()
        mosq = mosquitto_ceiling(stack, items, readings)
        copies, rates, ratios = [], [], []
        for _ in range(ROUNDS):
            copies.append(copy_ceiling(stack, readings))
            rate, rss = gateway_throughput(stack, items, readings, port)
            rates.append(rate)
            ratios.append(100 * rate / copies[-1])
            if len(rates) < ROUNDS:
                empty(stack)
        copy, e2e = median(copies), median(rates)
        size = bytes_per_reading(stack)  # the last round's rows
        empty(stack)
        copy2 = copy_ceiling(stack, readings, streams=2)
        ports = [port, free_port()]  # one gateway per core, as a deployment would run
        # A backlog an hour old, not in the future.
        e2e2 = drain_shared(stack, 2, ports, packs(10, T0 + 1000.0), SENSORS * 10)[0]
        leave(stack, ports[1], 1)  # back to one gateway for the latency run
        note = f"{len(items)} packs of {PER_BRIDGE} readings, {readings:,} readings"
        rows += [
            Row("ingest", "Mosquitto alone (null QoS 1 subscriber)", mosq, "readings/s", note),
            Row("ingest", "raw binary COPY into readings", copy, "readings/s", f"median of {ROUNDS} rounds"),
            Row("ingest", "end to end: MQTT → committed rows", e2e, "readings/s",
                f"median of {ROUNDS} rounds; target ≥ 100,000"),
            Row("ingest", "end to end / COPY ceiling", median(ratios), "%",
                f"median of the rounds' ratios ({' '.join(f'{r:.0f}' for r in ratios)}); target ≥ 70 %"),
            Row("ingest", "end to end / Mosquitto ceiling", 100 * e2e / mosq, "%"),
            Row("ingest", "raw binary COPY, 2 connections at once", copy2, "readings/s"),
            Row("ingest", "end to end, 2 gateways (one per core)", e2e2, "readings/s", "one shared subscription"),
            Row("ingest", "end to end, 2 gateways / COPY ceiling", 100 * e2e2 / copy, "%", "target ≥ 70 %"),
            Row("ingest", "end to end, 2 gateways / COPY with 2 connections", 100 * e2e2 / copy2, "%"),
            Row("ingest", "gateway RSS with 100,000 sensors", rss / 2**20, "MiB", "target < 300 MB"),
            Row("ingest", "disk per stored reading (heap + indexes)", size, "bytes",
                f"{size * 8640 * 1000 / 2**30:,.2f} GiB per 1,000 sensors per day at 10 s"),
        ]
        p50, p99, n = latency(stack, e2e / 2, port)
        rows += [Row("ingest", f"latency at half load ({e2e / 2:,.0f}/s), p50", p50, "s", f"{n:,} sampled rows"),
                 Row("ingest", "latency at half load, p99", p99, "s", "target < 2 s")]
    return rows
