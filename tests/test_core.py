"""The core's shared rules and shapes: site-local buckets, settings that refuse unsafe
secrets, and the one loop every long-running service runs in."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from launcher.localstack import free_port
from tests.factories import run_cli, wait_for
from wattline.buckets import bucket_bounds
from wattline.domain import Resolution
from wattline.service import LoopService, backoff_s, serve_http
from wattline.settings import KNOWN_DEFAULT_SECRETS, Settings, SettingsError

ZONES = ["Europe/London", "America/New_York", "Asia/Kolkata", "Australia/Sydney", "America/Sao_Paulo", "UTC",
         "Pacific/Chatham", "Asia/Kathmandu"]
# 2020-2030: DST rules of every kind, including zones that changed them.
INSTANTS = st.floats(min_value=1.58e9, max_value=1.9e9, allow_nan=False).map(lambda x: round(x, 3))


@settings(max_examples=60, deadline=None)
@given(stamps=st.lists(INSTANTS, min_size=1, max_size=30), zone=st.sampled_from(ZONES))
def test_local_days_match_timescaledbs_time_bucket(database_url: str, stamps: list[float], zone: str) -> None:
    """Days as `rollups_1d` always bucketed them (time_bucket with the zone), with their real ends."""
    starts, ends = bucket_bounds(stamps, Resolution.DAY1, zone)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """SELECT extract(epoch FROM d)::float8,
                      extract(epoch FROM ((d AT TIME ZONE %(tz)s) + interval '1 day') AT TIME ZONE %(tz)s)::float8
               FROM (SELECT time_bucket('1 day', to_timestamp(s), %(tz)s) AS d
                     FROM unnest(%(stamps)s::float8[]) WITH ORDINALITY x(s, i) ORDER BY i) y""",
            {"tz": zone, "stamps": stamps}).fetchall()
    assert [(float(a), float(b)) for a, b in zip(starts, ends, strict=True)] == [tuple(r) for r in rows]


def test_hours_follow_the_sites_clock_and_dst_days_have_23_or_25_hours() -> None:
    kolkata = datetime(2026, 5, 4, 10, 45, tzinfo=UTC).timestamp()  # 16:15 in Kolkata (+5:30)
    start, end = bucket_bounds([kolkata], Resolution.HOUR1, "Asia/Kolkata")
    assert datetime.fromtimestamp(start[0], UTC) == datetime(2026, 5, 4, 10, 30, tzinfo=UTC)
    assert end[0] - start[0] == 3600
    for day, hours in (("2026-03-29", 23), ("2026-10-25", 25)):
        noon = datetime.fromisoformat(f"{day}T12:00:00+00:00").timestamp()
        start, end = bucket_bounds([noon], Resolution.DAY1, "Europe/London")
        assert end[0] - start[0] == hours * 3600
    start, _ = bucket_bounds([kolkata], Resolution.MIN15, "Asia/Kolkata")
    assert datetime.fromtimestamp(start[0], UTC) == datetime(2026, 5, 4, 10, 45, tzinfo=UTC)


# -- settings ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("secret", [*sorted(KNOWN_DEFAULT_SECRETS), "short"])
def test_known_default_or_short_secrets_are_refused_outside_the_demo(secret: str) -> None:
    with pytest.raises(ValidationError, match="WATTLINE_SECRET_KEY"):
        Settings(secret_key=secret)
    assert Settings(secret_key=secret, demo=True).demo


@pytest.mark.timeout(60)  # should the refusal regress, `wattline api` would serve forever: fail fast instead
def test_a_missing_url_or_unsafe_secret_is_named() -> None:
    with pytest.raises(SettingsError, match="WATTLINE_DATABASE_URL"):
        Settings(database_url="").require_database_url()
    res = run_cli("api", env={"WATTLINE_SECRET_KEY": "dev-only-change-me", "WATTLINE_DATABASE_URL": "x"})
    assert res.exit_code == 2 and "WATTLINE_SECRET_KEY" in res.output and "Traceback" not in res.output


# -- the service loop ------------------------------------------------------------------------------------
def test_backoff_grows_to_its_cap_with_jitter() -> None:
    delays = [backoff_s(n) for n in range(1, 12)]
    assert delays[0] < 1 and all(d <= 30 * 1.2 for d in delays) and delays[-1] > 20


def test_a_failing_pass_is_recorded_and_the_loop_goes_on(database_url: str) -> None:
    calls: list[int] = []
    seen: list[tuple[str | None, bool]] = []  # (last error, healthy) as each pass starts

    def one_pass(conn: psycopg.Connection[Any]) -> bool:
        seen.append((service.last_error, service.health() is not None))
        calls.append(conn.execute("SELECT 1").fetchone()[0])
        if len(calls) in (2, 3):
            raise httpx.InvalidURL("a tenant's webhook host")  # not an HTTPError: no type is "impossible"
        if len(calls) == 4:
            conn.execute("BEGIN")
            raise RuntimeError("left a transaction open")
        return False

    service = LoopService("probe", database_url, one_pass, 0.05)
    service.start()
    wait_for(lambda: len(calls) >= 6, 10)
    service.stop()
    assert not service.is_alive()
    assert seen[2][0] == "InvalidURL: a tenant's webhook host" and seen[2][1]  # failing, still serving
    assert seen[4][0] == "RuntimeError: left a transaction open"
    assert service.errors == 3 and service.passes >= 3
    assert service.failing_since is None and service.last_error is None  # the last pass went well


def test_a_dead_database_is_retried_with_backoff_and_health_says_so() -> None:
    url = f"postgresql://wattline@127.0.0.1:{free_port()}/x?connect_timeout=1"
    service = LoopService("probe-dead", url, lambda conn: False, 0.05, stale_after_s=1.0)
    port = free_port()
    http = serve_http(port, service.health)
    service.start()
    try:
        wait_for(lambda: service.errors >= 2, 20)
        assert not service.database_up
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 503
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'wattline_service_errors_total{kind="database",service="probe-dead"}' in metrics
    finally:
        service.stop()
        http.shutdown()


def test_stop_is_graceful_and_prompt(database_url: str) -> None:
    started = threading.Event()

    def one_pass(conn: psycopg.Connection[Any]) -> bool:
        started.set()
        return False

    service = LoopService("probe-stop", database_url, one_pass, period_s=3600)
    service.start()
    assert started.wait(10)
    t0 = time.monotonic()
    service.stop()
    assert not service.is_alive() and time.monotonic() - t0 < 5
    assert service.health() is None  # a stopped service is not healthy
