"""The network between the gateway and its peers goes bad: a fault-injecting TCP proxy sits
between gateway and broker and between gateway and PostgreSQL (tests/fixtures/netfault.py).
Through each fault every reading is stored exactly once, the gateway's memory stays bounded,
and it recovers by itself. The simulator publishes to the broker directly."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
import pytest

from sensor_sim.fleet import build_fleet
from sensor_sim.seed import seed_catalogue
from tests.factories import count, expected_set, stored_set, wait_for
from tests.fixtures.gateway import simulate_in_background
from tests.fixtures.netfault import FaultProxy

pytestmark = pytest.mark.faults


def via(url: str, proxy: FaultProxy) -> str:
    """The same URL, through the proxy."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit((parts.scheme, f"{netloc[0]}@{host}" if len(netloc) == 2 else host, parts.path, parts.query,
                       parts.fragment))


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


FAULTS: dict[str, Callable[[FaultProxy, FaultProxy, threading.Event], None]] = {}


def fault(name: str) -> Callable[[Callable[[FaultProxy, FaultProxy, threading.Event], None]], Any]:
    def register(f: Callable[[FaultProxy, FaultProxy, threading.Event], None]) -> Any:
        FAULTS[name] = f
        return f
    return register


@fault("500 ms latency on both links")
def _latency(pg: FaultProxy, mq: FaultProxy, streaming: threading.Event) -> None:
    pg.latency_s = mq.latency_s = 0.5


@fault("the database connection cut mid-COPY, again and again")
def _cuts(pg: FaultProxy, mq: FaultProxy, streaming: threading.Event) -> None:
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and streaming.is_set():
        time.sleep(0.3)
        pg.cut()


def _half_open(proxy: FaultProxy) -> None:
    """8 s of a peer that accepts and acknowledges bytes and never answers, then a healthy one."""
    time.sleep(1.0)
    proxy.half_open = True
    time.sleep(8.0)
    proxy.half_open = False
    proxy.cut()  # what hung behind it goes; new connections work


@fault("a half-open database that accepts and never answers")
def _half_open_db(pg: FaultProxy, mq: FaultProxy, streaming: threading.Event) -> None:
    _half_open(pg)


@fault("a half-open broker")
def _half_open_broker(pg: FaultProxy, mq: FaultProxy, streaming: threading.Event) -> None:
    _half_open(mq)


@fault("the broker link capped at 50 kB/s")
def _bandwidth(pg: FaultProxy, mq: FaultProxy, streaming: threading.Event) -> None:
    mq.bytes_per_s = 50_000


@pytest.mark.parametrize("name", list(FAULTS))
def test_every_reading_once_through_a_bad_network(
        name: str, db: psycopg.Connection[Any], database_url: str, mqtt_url: str, gateway_mqtt_url: str, gateways: Any,
        fault_proxy: Callable[[str, int], FaultProxy]) -> None:
    fleet = build_fleet(1, 2, 10)
    seed_catalogue(db, fleet)
    pg = fault_proxy("127.0.0.1", port_of(database_url))
    mq = fault_proxy("127.0.0.1", port_of(mqtt_url))
    # A write that has not answered in 20 s is abandoned (5 s where the database is half-open,
    # to keep the test short): 500 ms each way makes a commit's few round trips take seconds.
    timeout = "5" if name == "a half-open database that accepts and never answers" else "20"
    gw = gateways(db_url=via(database_url, pg), WATTLINE_MQTT_URL=via(gateway_mqtt_url, mq),
                  WATTLINE_DB_WRITE_TIMEOUT_S=timeout, WATTLINE_MQTT_KEEPALIVE_S="3").start()
    streaming = threading.Event()
    streaming.set()
    thread, report = simulate_in_background(mqtt_url, fleet, ticks=40, pace_s=0.2)
    inject = threading.Thread(target=FAULTS[name], args=(pg, mq, streaming))
    inject.start()
    rss: list[int] = []
    assert gw.proc is not None
    process = psutil.Process(gw.proc.pid)
    while thread.is_alive():
        rss.append(process.memory_info().rss)
        thread.join(0.2)
    streaming.clear()
    inject.join()
    expected = expected_set(report)
    try:
        wait_for(lambda: stored_set(db) == expected, 120, 0.5)  # recovers by itself
    finally:
        print(gw.log.read_text()[-3000:] if gw.log.exists() else "no gateway log")
    assert count(db, "SELECT count(*) FROM readings") == len(expected)  # exactly once
    assert max(rss) < 300 * 2**20, max(rss) / 2**20
    assert wait_for(gw.health, 60)  # subscribed again and serving
    print(f"{name}: {len(expected)} readings stored once; gateway RSS at most {max(rss) / 2**20:.0f} MiB; "
          f"{pg.connections} database and {mq.connections} broker connections")


def test_a_cut_resets_both_ends_and_the_server_forgets_the_session(
        db: psycopg.Connection[Any], database_url: str, fault_proxy: Callable[[str, int], FaultProxy]) -> None:
    """The proxy's cut is a real reset: the backend behind it ends at once, and releases what it
    held (a cut that left it alive made the gateway's retry wait behind its row locks). Long-lived
    connections also set the server side's keepalives, for cuts no RST reports."""
    from wattline.db import connect_long_lived

    pg = fault_proxy("127.0.0.1", port_of(database_url))
    conn = connect_long_lived(via(database_url, pg))
    pid = conn.info.backend_pid
    settings = dict(conn.execute("""SELECT name, setting FROM pg_settings WHERE name IN
                                    ('tcp_keepalives_idle', 'tcp_user_timeout')""").fetchall())
    assert settings == {"tcp_keepalives_idle": "10", "tcp_user_timeout": "30000"}
    conn.execute("BEGIN")
    conn.execute("SELECT pg_advisory_xact_lock(4242)")
    assert pg.cut() == 1
    wait_for(lambda: count(db, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", pid) == 0, 10, 0.1)
    assert db.execute("SELECT pg_try_advisory_lock(4242)").fetchone() == (True,)
    db.execute("SELECT pg_advisory_unlock(4242)")
    conn.close()
