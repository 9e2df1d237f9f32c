"""`python -m bench rolluploop`: rollups in the loop, at a real fleet's shape (#21).

Sites of 500 circuits on three-phase boards (1,500 sensors a site, every one assigned),
bridges of 30 sensors sending a sweep every 10 s in real time through Mosquitto and a
gateway (`--no-rollups`), and first one, then two `wattline rollups` workers sharing the
queue. The publisher, standing in for bridges that are not on the server in a deployment,
runs in its own process at a lower priority (`PUBLISHER_NICE`); the rate it reaches is shown.
The rollup lag is the issue's: a real-time minute's newest readings stored → its
1-minute rollups committed, which each worker observes per minute
(`wattline_rollup_lag_seconds`, read from its /metrics: p50 and p99 as the histogram
bucket that holds them, the mean exact). Whether work piles up is read once a second: how
long the oldest *due* queue row has waited past its due time (a minute's work is due
`rollup_settle_s` after it closes), median of the last third against the first. Each
phase starts once its workers are warm (`warm_up`: a started worker's first minute reads
every site's catalogue), and reports the passes' mean duration (`wattline_rollup_pass_seconds`).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import MutableSequence
from typing import Protocol

import numpy as np
import psutil
import psycopg

from bench.common import Row, Stack, cpu_s, mosquitto_processes, percentile, postgres_processes, services
from bench.ingest import gateway_env, start_gateway, wait_healthy
from bench.mqtt_wire import QoS1Publisher
from bench.seed import clone_site
from sensor_sim.seed import UK_STYLE_TARIFF
from wattline.domain import Connection
from wattline.readings_chunks import describe_sizing, size_chunks
from wattline.senml import SENML_TOPIC, encode_pack
from wattline.settings import Settings
from wattline.site_builder import CircuitSpec, PanelSpec, SensorSpec, SiteSpec, build_site, build_tenant

SITES = int(os.environ.get("WATTLINE_BENCH_SITES", "8"))
CIRCUITS, BOARDS, PER_BRIDGE = 500, 10, 30
PHASE_S = float(os.environ.get("WATTLINE_BENCH_PHASE_S", "180"))  # each worker count runs this long
WORKERS = [int(w) for w in os.environ.get("WATTLINE_BENCH_LOOP_WORKERS", "1,2").split(",")]


def fleet_site(s: int) -> tuple[SiteSpec, dict[str, list[str]]]:
    """Site s: 500 three-phase circuits on 10 boards under a main board, bridges of 30
    sensors, the UK-style tariff; and each bridge's sensors."""
    sensors = [f"CT{s:03d}{c:03d}{p}" for c in range(CIRCUITS) for p in (1, 2, 3)]
    site_bridges = [f"BR-{s:03d}-{b:03d}" for b in range(len(sensors) // PER_BRIDGE)]
    bridges: dict[str, list[str]] = {}
    for i, serial in enumerate(sensors):
        bridges.setdefault(site_bridges[i // PER_BRIDGE], []).append(serial)
    boards = tuple(PanelSpec(
        f"S{s}B{b}", f"Board {b}", 400.0, 0.92, Connection.THREE_PHASE_WYE,
        circuits=tuple(CircuitSpec(f"S{s}C{c}", f"Circuit {c}", tuple(
            SensorSpec(f"CT{s:03d}{c:03d}{p}", site_bridges[(c * 3 + p - 1) // PER_BRIDGE], p, 100.0)
            for p in (1, 2, 3))) for c in range(b, CIRCUITS, BOARDS)),
        feeder=CircuitSpec(f"S{s}F{b}", f"Feeder {b}")) for b in range(BOARDS))
    return SiteSpec(f"Site {s}", timezone="Europe/London", bridges=tuple(site_bridges), tariff=UK_STYLE_TARIFF,
                    panels=(PanelSpec(f"S{s}MSB", "MSB", 400.0, 0.95, Connection.THREE_PHASE_WYE,
                                      sub_panels=boards),)), bridges


def seed(stack: Stack) -> dict[str, list[str]]:
    """SITES sites of 500 three-phase circuits; returns each bridge's sensors. The first is
    built through the catalogue, the rest are its copies in SQL (`bench.seed.clone_site`:
    serials and bridges end in `-k`), so that a fleet of hundreds of sites seeds in a minute."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        _, customer = build_tenant(conn, "bench", "bench")
        spec, first = fleet_site(0)
        built = build_site(conn, customer, spec)
        clone_site(conn, built.site_id, SITES - 1)
    bridges = dict(first)
    for k in range(1, SITES):
        bridges.update({f"{bridge}-{k}": [f"{serial}-{k}" for serial in serials] for bridge, serials in first.items()})
    return bridges


PUBLISH_SLOT_S = 0.05
#: The publisher stands in for bridges that in a deployment are on their sites, not on the
#: server: it runs in a process of its own at this niceness, so that where the machine is
#: short of CPU the stand-in waits, not the server, and the rate it reaches shows whether it did.
PUBLISHER_NICE = 10


class EventLike(Protocol):
    def is_set(self) -> bool: ...


def publisher_process(url: str, bridges: dict[str, list[str]], stop: EventLike, sent: MutableSequence[int]) -> None:
    os.nice(PUBLISHER_NICE)
    publish(url, bridges, stop, sent)


def publish(url: str, bridges: dict[str, list[str]], stop: EventLike, sent: MutableSequence[int]) -> None:
    """Every bridge's sweep once every 10 s, the bridges spread over the 10 s, as a fleet does,
    at QoS 1 (`bench.mqtt_wire`: paho's own cost per pack was a third of a core here)."""
    pub = QoS1Publisher(url, "bench-fleet")
    rng = np.random.default_rng(9)
    items = [(SENML_TOPIC.format(bridge=bridge).encode(), serials) for bridge, serials in bridges.items()]
    # The bridges due within a slot go out together: one wake-up a slot, where one a bridge
    # (3,335 a second at the whole fleet) cost the publisher's thread more than its packs.
    per_slot = max(1, round(len(items) * PUBLISH_SLOT_S / 10.0))
    tick = time.time() // 10 * 10 + 10
    while not stop.is_set():
        for first in range(0, len(items), per_slot):
            time.sleep(max(0.0, tick + 10.0 * first / len(items) - time.time()))
            slot = items[first:first + per_slot]
            pub.publish_many((topic, encode_pack(list(zip(serials, [tick] * len(serials),
                                                          rng.uniform(1, 60, len(serials)).round(3).tolist(),
                                                          strict=True)))) for topic, serials in slot)
            sent[0] += sum(len(serials) for _, serials in slot)
        tick += 10.0
    pub.close()


def start_worker(stack: Stack, n: int, port: int) -> subprocess.Popen[bytes]:
    from launcher.localstack import free_port

    env = {**gateway_env(stack, free_port(), 90 + n), "WATTLINE_ROLLUPS_HEALTH_PORT": str(port)}
    return subprocess.Popen([sys.executable, "-m", "launcher.cli", "rollups"], env=env,
                            stdout=subprocess.DEVNULL, stderr=(stack.root / f"rollups{n}.log").open("ab"))


#: A worker's first minute of the fleet also loads every site's catalogue (`analytics.
#: site_catalogues`), once per start: a phase is measured from when the workers have done
#: this many passes since they started (two minutes of 16 shards, 4 a pass), so that it
#: shows the steady state a running fleet has, not a worker's start.
WARM_PASSES, WARM_MAX_S = 8, 300.0


def warm_up(ports: list[int], passes_then: float) -> None:
    """Wait until the workers have done WARM_PASSES more passes than `passes_then` (at
    least 30 s, at most WARM_MAX_S)."""
    import httpx

    started = time.monotonic()
    time.sleep(30)
    while time.monotonic() - started < WARM_MAX_S:
        try:
            if passes_done(ports) - passes_then >= WARM_PASSES:
                return
        except httpx.HTTPError:  # a worker still starting
            pass
        time.sleep(2)


def overdue_samples(stack: Stack, seconds: float) -> list[float]:
    """Once a second: how long the oldest due queue row has waited past its due time."""
    out: list[float] = []
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            row = conn.execute("SELECT coalesce(extract(epoch FROM now() - min(not_before)), 0)::float8 "
                               "FROM rollup_dirty WHERE not_before <= now()").fetchone()
            out.append(float(row[0]) if row else 0.0)
            time.sleep(1.0)
    return out


ROWS_COUNTERS = ("wattline_rollup_real_time_rows_total", "wattline_rollup_minute_before_rows_total",
                 "wattline_rollup_pass_seconds_count", "wattline_rollup_pass_seconds_sum")


def passes_done(ports: list[int]) -> float:
    """The passes that took work so far, over all the workers."""
    return worker_metrics(ports)[3][ROWS_COUNTERS.index("wattline_rollup_pass_seconds_count")]


def blocks_read(stack: Stack) -> tuple[int, int, int]:
    """PostgreSQL's blocks read from outside shared_buffers and found in them, and the
    buffers its backends had to write themselves, so far."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        row = conn.execute("""SELECT (SELECT sum(blks_read) FROM pg_stat_database),
                                       (SELECT sum(blks_hit) FROM pg_stat_database),
                                       (SELECT buffers_backend FROM pg_stat_bgwriter)""").fetchone()
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


def worker_metrics(ports: list[int]) -> tuple[dict[float, float], float, float, list[float]]:
    """The workers' /metrics summed, each read once: the lag histogram (cumulative count by
    bucket bound, count, sum) and the ROWS_COUNTERS."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    count = total = 0.0
    counters = dict.fromkeys(ROWS_COUNTERS, 0.0)
    for port in ports:
        for family in text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text):
            for sample in family.samples:
                if sample.name in counters:
                    counters[sample.name] += sample.value
                elif family.name != "wattline_rollup_lag_seconds":
                    continue
                elif sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
                elif sample.name.endswith("_count"):
                    count += sample.value
                elif sample.name.endswith("_sum"):
                    total += sample.value
    return buckets, count, total, [counters[c] for c in ROWS_COUNTERS]


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The upper bound of the bucket holding quantile q of what was observed between the two reads."""
    seen = {b: after[b] - before.get(b, 0.0) for b in sorted(after)}
    n = seen.get(math.inf, 0.0)
    for bound, cumulative in seen.items():
        if n and cumulative >= q * n:
            return bound
    return math.nan


def run() -> list[Row]:
    from launcher.localstack import free_port

    rows: list[Row] = []
    with services() as stack:
        bridges = seed(stack)
        sensors = sum(len(s) for s in bridges.values())
        # As `wattline up` and the packing job do: chunks sized to the fleet just seeded.
        sizing = size_chunks(stack.database_url, Settings())
        rows.append(Row("rollups in the loop", "readings chunk width", sizing.width.total_seconds() / 60, "min",
                        describe_sizing(sizing)))
        port = free_port()
        gateway = start_gateway(stack, port)
        wait_healthy(port)
        fork = multiprocessing.get_context("fork")
        stop, sent = fork.Event(), fork.RawArray("q", 1)
        publisher = fork.Process(target=publisher_process, args=(stack.publisher_url, bridges, stop, sent),
                                 daemon=True)
        publisher.start()
        workers: list[subprocess.Popen[bytes]] = []
        ports: list[int] = []
        try:
            for phase, count in enumerate(WORKERS, 1):
                passes_then = passes_done(ports) if ports else 0.0
                while len(workers) < count:
                    ports.append(free_port())
                    workers.append(start_worker(stack, len(workers), ports[-1]))
                warm_up(ports, passes_then)
                sent_before = sent[0]
                cpu_before = [psutil.Process(w.pid).cpu_times() for w in workers]
                others = {"gateway": [psutil.Process(gateway.pid)], "PostgreSQL": postgres_processes(stack),
                          "Mosquitto": mosquitto_processes(stack),
                          f"publisher (nice {PUBLISHER_NICE})": [psutil.Process(publisher.pid)]}
                others_before = {k: cpu_s(v) for k, v in others.items()}
                machine_before = psutil.cpu_times()
                hist_before, count_before, sum_before, rows_before = worker_metrics(ports)
                read_before = blocks_read(stack)
                overdue = overdue_samples(stack, PHASE_S)
                hist_after, count_after, sum_after, rows_after = worker_metrics(ports)
                read = [a - b for a, b in zip(blocks_read(stack), read_before, strict=True)]
                real_time, minute_before, passes, pass_s = (a - b for a, b in zip(rows_after, rows_before, strict=True))
                rate = (sent[0] - sent_before) / PHASE_S
                cpu = [sum(psutil.Process(w.pid).cpu_times()[:2]) - sum(c[:2])
                       for w, c in zip(workers, cpu_before, strict=True)]
                rss = [psutil.Process(w.pid).memory_info().rss / 2**20 for w in workers]
                others_cpu = {k: cpu_s(others[k]) - others_before[k] for k in others}
                machine_after = psutil.cpu_times()
                # Waiting on the disk (iowait) is idle CPU, not work; guest time is inside user already.
                idle = [t.idle + getattr(t, "iowait", 0.0) + getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
                        for t in (machine_before, machine_after)]
                busy = sum(machine_after) - sum(machine_before) - (idle[1] - idle[0])
                minutes = count_after - count_before
                third = max(1, len(overdue) // 3)
                early, late = statistics.median(overdue[:third]), statistics.median(overdue[-third:])
                label = f"{count} worker{'s' if count > 1 else ''}" + (f" (phase {phase})" if len(WORKERS) > 1 else "")
                note = f"{SITES} sites × 500 three-phase circuits, {sensors:,} sensors, {len(bridges):,} bridges"
                backlog = psycopg.connect(stack.database_url, autocommit=True)
                with backlog:
                    queued = backlog.execute("SELECT count(*) FROM rollup_dirty").fetchone()
                rows += [
                    Row("rollups in the loop", f"{label}: queue rows waiting at the end", float(queued[0] if queued
                                                                                              else 0), "rows"),
                    Row("rollups in the loop", f"{label}: readings/s published", rate, "readings/s", note),
                    Row("rollups in the loop", f"{label}: rollup lag p50 ≤", bucket_quantile(hist_before,
                                                                                          hist_after, 0.5), "s",
                        f"{minutes:,.0f} minutes observed; mean {(sum_after - sum_before) / max(minutes, 1):.1f} s"),
                    Row("rollups in the loop", f"{label}: rollup lag p99 ≤", bucket_quantile(hist_before,
                                                                                          hist_after, 0.99), "s",
                        "target ≤ 60 s: newest readings stored → 1-minute rollups committed"),
                    Row("rollups in the loop", f"{label}: due work overdue, p99", percentile(overdue, 99), "s",
                        f"sampled each second; first third {early:.1f} s, last third {late:.1f} s (growing?)"),
                    Row("rollups in the loop", f"{label}: real-time work that re-computed the minute before",
                        100 * minute_before / max(real_time, 1), "%",
                        f"{minute_before:,.0f} of {real_time:,.0f} queue rows: a first reading stored after that "
                        "minute was read (`left_pad`)"),
                    Row("rollups in the loop", f"{label}: passes that took work, mean", pass_s / max(passes, 1), "s",
                        f"{passes:,.0f} passes, busy {100 * pass_s / PHASE_S / count:.0f} % of the phase"
                        + (" per worker" if count > 1 else "")),
                    Row("rollups in the loop", f"{label}: PostgreSQL blocks read from outside its buffers",
                        read[0] / PHASE_S, "blocks/s",
                        f"{100 * read[0] / max(read[0] + read[1], 1):.2f} % of the blocks it needed; "
                        f"{read[2] / PHASE_S:,.0f} blocks/s written by backends themselves"),
                    Row("rollups in the loop", f"{label}: worker CPU", 100 * sum(cpu) / PHASE_S, "% of a core",
                        " + ".join(f"{100 * c / PHASE_S:.0f} %" for c in cpu)),
                    Row("rollups in the loop", f"{label}: worker memory (RSS)", max(rss), "MiB",
                        " + ".join(f"{m:.0f}" for m in rss) + " MiB, with the sites' catalogues they keep"),
                    *(Row("rollups in the loop", f"{label}: {name} CPU", 100 * c / PHASE_S, "% of a core")
                      for name, c in others_cpu.items()),
                    Row("rollups in the loop", f"{label}: the machine busy", 100 * busy / PHASE_S, "% of a core",
                        f"of {psutil.cpu_count()} cores; the bench's own processes and the rest of the host: "
                        f"{100 * (busy - sum(cpu) - sum(others_cpu.values())) / PHASE_S:.0f} %"),
                ]
        finally:
            stop.set()
            publisher.join(30)
            if publisher.is_alive():
                publisher.kill()
            for proc in [*workers, gateway]:
                proc.terminate()
            for proc in [*workers, gateway]:
                try:
                    proc.wait(120)  # a worker finishes the pass in hand first
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return rows
