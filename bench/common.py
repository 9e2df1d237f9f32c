"""Shared benchmark plumbing: private services, timing, and the table printer."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

from launcher.localstack import LocalMosquitto, LocalPostgres, ensure_installed, free_port
from wattline.db import create_database, with_database
from wattline.migrate import migrate


@dataclass
class Row:
    group: str
    figure: str
    value: float
    unit: str
    note: str = ""


@dataclass
class Stack:
    root: Path
    postgres: LocalPostgres
    mosquitto: LocalMosquitto
    database_url: str

    @property
    def mqtt_url(self) -> str:
        """The broker as the gateway signs in to it."""
        return self.mosquitto.url_for("gateway")

    @property
    def publisher_url(self) -> str:
        """The broker as the simulator (every bridge at once) signs in to it."""
        return self.mosquitto.url_for("simulator")


@contextmanager
def services(*, durable: bool = True) -> Iterator[Stack]:
    """PostgreSQL + TimescaleDB (fsync on: numbers a deployment would see) and Mosquitto."""
    ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="wattline-bench-"))
    pg = LocalPostgres(root / "pg", free_port(), durable=durable)
    mq = LocalMosquitto(root / "mq", free_port())
    pg.start()
    mq.start()
    url = with_database(pg.url, "bench")
    create_database(url)
    migrate(url)
    try:
        yield Stack(root, pg, mq, url)
    finally:
        mq.stop()
        pg.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def api_server(stack: Stack) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real `wattline api` (uvicorn) on a free port over the stack's database, healthy:
    its base URL and process, stopped on exit."""
    import httpx

    port = free_port()
    env = {**os.environ, "WATTLINE_DATABASE_URL": stack.database_url, "WATTLINE_API_PORT": str(port)}
    api = subprocess.Popen([sys.executable, "-m", "launcher.cli", "api"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base, api
    finally:
        api.terminate()
        api.wait(30)


def readings_like(conn: psycopg.Connection[Any], name: str, width: str | timedelta) -> None:
    """A hypertable shaped as `readings` in chunks of `width`, with its (sensor_id, ts)
    unique index and no other: to measure a change beside the real table's shape."""
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
        sql.Identifier(name)))
    conn.execute("SELECT create_hypertable(%s, by_range('ts', %s::interval), create_default_indexes => false)",
                 (name, width))
    conn.execute(sql.SQL("CREATE UNIQUE INDEX ON {} (sensor_id, ts)").format(sql.Identifier(name)))


def timings(fn: Callable[[], object], repeat: int) -> list[float]:
    """How long each of `repeat` runs of `fn` took, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """The fastest of `repeat` runs, in seconds (the least disturbed by a shared machine)."""
    return min(timings(fn, repeat))


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """The median of `repeat` timed runs of `fn`, in seconds."""
    return median(timings(fn, repeat))


def print_table(rows: list[Row]) -> None:
    widths = [max(len(r.group) for r in rows), max(len(r.figure) for r in rows)]
    header = f"| {'bench':<{widths[0]}} | {'figure':<{widths[1]}} | {'value':>14} | {'unit':<12} | note"
    print(header)
    print("|" + "|".join("-" * n for n in (widths[0] + 2, widths[1] + 2, 16, 14, 30)) + "|")
    for r in rows:
        value = f"{r.value:,.0f}" if abs(r.value) >= 100 else f"{r.value:,.3g}"
        print(f"| {r.group:<{widths[0]}} | {r.figure:<{widths[1]}} | {value:>14} | {r.unit:<12} | {r.note}")


def cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def mosquitto_processes(stack: Stack) -> list[psutil.Process]:
    """The bench's Mosquitto (its configuration is in its data folder)."""
    return [p for p in psutil.process_iter(["name", "cmdline"])
            if "mosquitto" in (p.info["name"] or "") and str(stack.mosquitto.data_dir) in " ".join(p.info["cmdline"]
                                                                                                   or [])]


def postgres_processes(stack: Stack) -> list[psutil.Process]:
    """The bench's PostgreSQL: the postmaster on its port and every backend under it."""
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "postgres" in (p.info["name"] or "") and str(stack.postgres.data_dir) in cmd:
            return [p, *p.children(recursive=True)]
    return []
