"""A rollup worker keeps its sites' catalogues (tree, wiring, electrical parameters) between
passes and reads a site's again only when a write has moved its version
(`analytics.site_catalogues`, `sql/040_site_catalogue_versions.sql`). Each kind of catalogue
write is made through its core function while one long-lived engine works the queue, as
`wattline rollups` does; after each, its rollups equal a re-computation from scratch by a
fresh engine, and only the sites the write touched were read again. Real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from analytics.worker import RollupEngine
from tests import factories
from tests.factories import GAP, drain, write
from wattline import assignments, catalogue
from wattline.domain import Connection
from wattline.site_builder import BuiltSite, CircuitSpec, PanelSpec, SensorSpec, SiteSpec, build_site, build_tenant

T0 = datetime(2026, 5, 4, 10, tzinfo=UTC)
MINUTES = 60


def readings(serials: tuple[str, ...], first: int, last: int) -> list[tuple[str, float, float]]:
    """Every 10 s over minutes [first, last), a current that changes every reading."""
    return [(s, T0.timestamp() + i * 10, 3.0 + k + (i % 7) * 0.5) for k, s in enumerate(serials)
            for i in range(first * 6, last * 6 + 1)]


@pytest.fixture
def sites(db: psycopg.Connection[Any], database_url: str) -> tuple[BuiltSite, BuiltSite]:
    """S1: panel P (230 V) with circuits A (CT-1), B (CT-2) and C; S2: panel Q (400 V,
    three-phase) with circuit D (CT-3). An hour of readings of all three."""
    _, customer = build_tenant(db, "R", "C")
    s1 = build_site(db, customer, SiteSpec("S1", timezone="UTC", bridges=("BR-1",), panels=(
        PanelSpec("P", "P", 230.0, 1.0, Connection.SINGLE_PHASE, circuits=(
            CircuitSpec("A", "A", (SensorSpec("CT-1", "BR-1"),)), CircuitSpec("B", "B", (SensorSpec("CT-2", "BR-1"),)),
            CircuitSpec("C", "C"))),)))
    s2 = build_site(db, customer, SiteSpec("S2", timezone="Europe/London", bridges=("BR-2",), panels=(
        PanelSpec("Q", "Q", 400.0, 0.9, Connection.THREE_PHASE_WYE, circuits=(
            CircuitSpec("D", "D", (SensorSpec("CT-3", "BR-2"),)),)),)))
    write(database_url, readings(("CT-1", "CT-2"), 0, MINUTES), bridge="BR-1")
    write(database_url, readings(("CT-3",), 0, MINUTES), bridge="BR-2")
    return s1, s2


def equals_a_recompute_from_scratch(db: psycopg.Connection[Any]) -> None:
    factories.equals_a_recompute_from_scratch(db, T0 - timedelta(days=1), T0 + timedelta(days=1))


def versions(db: psycopg.Connection[Any]) -> dict[int, int]:
    return {int(s): int(v) for s, v in db.execute("SELECT site_id, version FROM site_catalogue_versions")}


def test_a_kept_catalogue_follows_every_catalogue_write(
        db: psycopg.Connection[Any], database_url: str, sites: tuple[BuiltSite, BuiltSite]) -> None:
    s1, s2 = sites
    worker = RollupEngine(GAP)
    drain(db, worker)
    assert worker.catalogues.reads == 2
    assert db.execute("SELECT count(*) FROM rollups_1m").fetchone() != (0,)
    equals_a_recompute_from_scratch(db)

    # New readings, nothing edited: both sites' catalogues are kept.
    write(database_url, readings(("CT-1", "CT-2"), MINUTES, MINUTES + 10), bridge="BR-1")
    write(database_url, readings(("CT-3",), MINUTES, MINUTES + 10), bridge="BR-2")
    drain(db, worker)
    assert worker.catalogues.reads == 2
    equals_a_recompute_from_scratch(db)

    # Panel P re-rated: the history under it is re-computed at 400 V, S1 alone read again.
    catalogue.update_node(db, None, s1.nodes["P"], {"nominal_voltage_v": 400.0})
    drain(db, worker)
    assert worker.catalogues.reads == 3
    equals_a_recompute_from_scratch(db)

    # CT-2 moved from B to C half an hour in: its spans changed.
    assignments.move(db, None, "CT-2", s1.nodes["C"], 1, 100.0, at=T0 + timedelta(minutes=30))
    drain(db, worker)
    assert worker.catalogues.reads == 4
    equals_a_recompute_from_scratch(db)

    # A new circuit under Q, then CT-3 moved there: the tree and the wiring of S2.
    fed = catalogue.create_node(db, None, s2.site_id, s2.nodes["Q"], "circuit", "E", external_ref="E")
    assignments.move(db, None, "CT-3", fed, 2, 100.0, at=T0 + timedelta(minutes=20))
    drain(db, worker)
    assert worker.catalogues.reads == 5
    equals_a_recompute_from_scratch(db)

    # CT-1 unassigned from 45 minutes in.
    assignments.unassign(db, None, "CT-1", at=T0 + timedelta(minutes=45))
    drain(db, worker)
    assert worker.catalogues.reads == 6
    equals_a_recompute_from_scratch(db)


def test_each_catalogue_write_moves_the_versions_of_the_sites_it_touches(
        db: psycopg.Connection[Any], database_url: str, sites: tuple[BuiltSite, BuiltSite]) -> None:
    s1, s2 = sites
    before = versions(db)
    assert set(before) == {s1.site_id, s2.site_id}

    def moved() -> set[int]:
        nonlocal before
        now = versions(db)
        out = {s for s in now if now[s] != before.get(s)}
        before = now
        return out

    write(database_url, readings(("CT-1",), MINUTES, MINUTES + 5), bridge="BR-1")
    assert moved() == set()  # readings are not the catalogue
    catalogue.create_node(db, None, s1.site_id, s1.nodes["P"], "circuit", "F", external_ref="F")
    assert moved() == {s1.site_id}
    catalogue.update_node(db, None, s2.nodes["Q"], {"power_factor": 0.8})
    assert moved() == {s2.site_id}
    assignments.set_reports_power(db, None, "CT-3", True)
    assert moved() == {s2.site_id}
    db.execute("UPDATE sensors SET phase = phase WHERE serial = 'CT-3'")
    assert moved() == set()  # nothing a worker keeps
    # CT-1's bridge taken to S2 and the sensor placed there: S2 gains it, and S1, which
    # keeps every span of it, moves too.
    db.execute("UPDATE sensors SET bridge_id = (SELECT id FROM bridges WHERE serial = 'BR-2') WHERE serial = 'CT-1'")
    assert moved() == set()
    assignments.move(db, None, "CT-1", s2.nodes["D"], 3, 100.0, at=T0 + timedelta(minutes=50))
    assert moved() == {s1.site_id, s2.site_id}
    db.execute("TRUNCATE sensor_assignments")
    assert moved() == {s1.site_id, s2.site_id}


def test_a_sensor_moved_to_a_site_the_worker_does_not_keep_is_rolled_up_there(
        db: psycopg.Connection[Any], database_url: str, sites: tuple[BuiltSite, BuiltSite]) -> None:
    """A worker finds a pass's sites from the spans it keeps. CT-1, kept with S1 only, is
    moved to S2's circuit D: the first pass finds S1 alone from its old spans, reads S1
    again under its lock, sees the span at D, a site it does not hold, and queues CT-1's
    minutes again; the next pass takes S2 too. Nothing is lost: the rollups equal a
    re-computation from scratch."""
    _, s2 = sites
    drain(db)
    worker = RollupEngine(GAP)
    write(database_url, readings(("CT-1", "CT-2"), MINUTES, MINUTES + 2), bridge="BR-1")
    drain(db, worker)
    assert worker.catalogues.reads == 1  # S1 alone
    db.execute("UPDATE sensors SET bridge_id = (SELECT id FROM bridges WHERE serial = 'BR-2') WHERE serial = 'CT-1'")
    assignments.move(db, None, "CT-1", s2.nodes["D"], 3, 100.0, at=T0 + timedelta(minutes=MINUTES + 2))
    write(database_url, readings(("CT-1",), MINUTES + 2, MINUTES + 6), bridge="BR-2")
    write(database_url, readings(("CT-2",), MINUTES + 2, MINUTES + 6), bridge="BR-1")
    drain(db, worker)
    assert worker.catalogues.reads == 3  # S1 again (its version moved), and S2
    d = db.execute("SELECT sum(energy_wh) FROM rollups_1m WHERE node_id = %s AND bucket >= %s",
                   (s2.nodes["D"], T0 + timedelta(minutes=MINUTES + 2))).fetchone()
    assert d is not None and (d[0] or 0.0) > 0
    equals_a_recompute_from_scratch(db)
