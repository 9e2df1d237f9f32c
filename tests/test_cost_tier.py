"""The cost tier (daily energy and cost per node and tariff band): what it answers equals
pricing from the hourly tier, for whole and partial days; the worker keeps it current as
data arrives; a tariff change un-marks the days it re-prices, and the idle job re-prices
them."""

from __future__ import annotations

from dataclasses import astuple
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from analytics.band_rollups import price_unpriced_days
from analytics.costing import NodeCost, site_cost
from sensor_sim.seed import UK_STYLE_BANDS
from tests.factories import drain, one_circuit_site, write
from wattline import queries
from wattline.domain import Role
from wattline.principal import Principal
from wattline.tariffs import Band, add_tariff

LONDON = ZoneInfo("Europe/London")
SAT = datetime(2026, 5, 2, tzinfo=LONDON)  # Monday 4 May 2026 is a UK bank holiday


def _readings(start: datetime, hours: float) -> list[tuple[str, float, float]]:
    """Every 10 s; more current in working hours, so that the bands differ."""
    t0 = start.timestamp()
    out = []
    for i in range(int(hours * 360)):
        t = t0 + i * 10
        hour = datetime.fromtimestamp(t, LONDON).hour
        out.append(("CT-1", t, 20.0 if 7 <= hour < 19 else 4.0))
    return out


def _principal(db: psycopg.Connection[Any], site: int) -> Principal:
    customer = db.execute("SELECT customer_id FROM sites WHERE id = %s", (site,)).fetchone()
    return Principal(0, Role.CUSTOMER_ADMIN, None, customer[0] if customer else None, frozenset({"read"}))


def _costs(db: psycopg.Connection[Any], site: int, t_from: datetime, t_to: datetime) -> dict[int, tuple[Any, ...]]:
    cost = site_cost(db, _principal(db, site), site, t_from, t_to)
    assert cost is not None
    return {n.node_id: _rounded(n) for n in cost.nodes}


def _rounded(n: NodeCost) -> tuple[Any, ...]:
    _, energy, cost, by_band, remainder, max_power = astuple(n)
    return (round(energy, 6), cost, by_band, None if remainder is None else round(remainder, 6), max_power)


def _priced(db: psycopg.Connection[Any], site: int, t_from: datetime, t_to: datetime) -> list[datetime]:
    return [r["day"] for r in queries.priced_days(db, _principal(db, site), site, t_from, t_to)]


@pytest.fixture
def priced_site(db: psycopg.Connection[Any], database_url: str) -> int:
    site = one_circuit_site(db).site_id
    add_tariff(db, site, "Day/night", "GBP", datetime(2026, 1, 1, tzinfo=LONDON), UK_STYLE_BANDS)
    write(database_url, _readings(SAT + timedelta(hours=12), 48), now=SAT.timestamp() + 3 * 86400)
    drain(db)
    return site


def test_tier_equals_hourly_pricing_for_whole_and_partial_days(db: psycopg.Connection[Any], priced_site: int) -> None:
    whole = (SAT, SAT + timedelta(days=3))
    partial = (SAT + timedelta(hours=18), SAT + timedelta(days=2, hours=9))
    # The worker priced every day it re-aggregated, in the same pass.
    assert _priced(db, priced_site, *whole) == [SAT + timedelta(days=d) for d in range(3)]
    assert _priced(db, priced_site, *partial) == [SAT + timedelta(days=1)]  # only Sunday is whole
    from_tier = {r: _costs(db, priced_site, *r) for r in (whole, partial)}
    db.execute("DELETE FROM band_days")
    assert _priced(db, priced_site, *whole) == []
    for r, tiered in from_tier.items():
        hourly = _costs(db, priced_site, *r)
        assert tiered == hourly
        assert sum(c[1] for c in hourly.values()) > 0
    # Saturday has its weekend band, the bank-holiday Monday no weekday one.
    root = min(from_tier[whole])
    assert set(from_tier[whole][root][2]) == {"night", "weekend"}
    # The idle job marks them again.
    assert price_unpriced_days(db) == 3
    assert {r: _costs(db, priced_site, *r) for r in (whole, partial)} == from_tier


def test_node_cost_adds_up_to_the_invoice(db: psycopg.Connection[Any], priced_site: int) -> None:
    """Two independent paths: the tier in SQL per node, the Numba kernel on the site's 15-minute series."""
    cost = site_cost(db, _principal(db, priced_site), priced_site, SAT, SAT + timedelta(days=3))
    assert cost is not None and _priced(db, priced_site, SAT, SAT + timedelta(days=3))
    root = next(n for n in cost.nodes if n.node_id == min(x.node_id for x in cost.nodes))
    energy_lines = {line.label: line.minor for line in cost.invoice.lines if line.kind == "energy"}
    assert sum(energy_lines.values()) == pytest.approx(root.energy_cost_minor, abs=len(energy_lines))
    assert float(sum(line.quantity for line in cost.invoice.lines if line.kind == "energy")) == pytest.approx(
        root.energy_wh / 1000, abs=0.01)


def test_new_data_reprices_its_day_in_the_same_pass(db: psycopg.Connection[Any], database_url: str,
                                                    priced_site: int) -> None:
    whole = (SAT, SAT + timedelta(days=4))
    before = _costs(db, priced_site, *whole)
    # Monday afternoon and Tuesday morning arrive later (a bridge flushing its buffer).
    write(database_url, _readings(SAT + timedelta(days=2, hours=12), 20), now=SAT.timestamp() + 4 * 86400)
    drain(db)
    assert _priced(db, priced_site, *whole) == [SAT + timedelta(days=d) for d in range(4)]
    after = _costs(db, priced_site, *whole)
    assert after != before
    db.execute("DELETE FROM band_days")
    assert _costs(db, priced_site, *whole) == after


def test_a_tariff_change_unmarks_the_days_it_reprices(db: psycopg.Connection[Any], priced_site: int) -> None:
    whole = (SAT, SAT + timedelta(days=3))
    old = _costs(db, priced_site, *whole)
    # A back-dated version (the test database allows rewriting history) from Sunday on.
    flat = [Band("flat", Decimal("50"), ("weekday", "weekend", "holiday"), time(0), time(0))]
    add_tariff(db, priced_site, "Flat", "GBP", SAT + timedelta(days=1), flat)
    assert _priced(db, priced_site, *whole) == []  # from the day before the version on
    fresh = _costs(db, priced_site, *whole)  # priced from the hourly tier meanwhile
    assert fresh != old and "flat" in fresh[min(fresh)][2]
    assert price_unpriced_days(db) == 3
    assert _costs(db, priced_site, *whole) == fresh
    # A zone change moves local days: every mark of the site goes.
    db.execute("UPDATE sites SET timezone = 'Europe/Dublin' WHERE id = %s", (priced_site,))
    assert db.execute("SELECT count(*) FROM band_days").fetchone() == (0,)


def test_a_day_is_priced_once_it_is_over(db: psycopg.Connection[Any], database_url: str) -> None:
    """The day in progress is not priced: readers cost it from the hourly tier, and a mark and
    rows an earlier price left go with the next re-aggregation of the day. Yesterday, over,
    is priced in the same pass; the idle job leaves today alone too."""
    site = one_circuit_site(db).site_id
    add_tariff(db, site, "Day/night", "GBP", datetime(2026, 1, 1, tzinfo=LONDON), UK_STYLE_BANDS)
    now = datetime.now(LONDON)
    today = datetime.combine(now.date(), time(0), LONDON)
    yesterday = today - timedelta(days=1)
    start = yesterday + timedelta(hours=12)
    write(database_url, _readings(start, ((now - start).total_seconds() - 60) / 3600))
    drain(db)
    span = (yesterday, today + timedelta(days=1))
    assert _priced(db, site, *span) == [yesterday]
    tiered = _costs(db, site, *span)
    db.execute("DELETE FROM band_days")
    assert tiered == _costs(db, site, *span) and sum(c[1] for c in tiered.values()) > 0
    assert price_unpriced_days(db) == 1  # yesterday again; not today
    assert _priced(db, site, *span) == [yesterday]

    # Today marked and priced as a release before this one left it: the next pass un-marks it.
    root = db.execute("SELECT min(id) FROM nodes WHERE site_id = %s", (site,)).fetchone()
    assert root is not None
    db.execute("INSERT INTO band_days (site_id, day) VALUES (%s, %s)", (site, today))
    db.execute("""INSERT INTO rollups_band_1d (node_id, bucket, band, energy_wh, cost_minor)
                  VALUES (%s, %s, 'day', 1, 1)""", (root[0], today))
    write(database_url, [("CT-1", max(now.timestamp() - 30, today.timestamp() + 1), 20.0)])
    drain(db)
    assert _priced(db, site, *span) == [yesterday]
    assert db.execute("SELECT count(*) FROM rollups_band_1d WHERE bucket = %s", (today,)).fetchone() == (0,)
    assert price_unpriced_days(db) == 0
