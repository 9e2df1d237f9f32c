"""CO2e (#22): the bundled country table, a site's own factor, an uploaded hourly series,
and CO2e per node and period through the API, against a pandas reference built from the
hourly rollups read back from the database. Every bad input is refused with a reason and
stores nothing; energy with no factor is unknown, never zero."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.factories import Tenant, auth, count
from wattline import emissions, virtual_meters
from wattline.errors import RowErrors

START = datetime(2026, 10, 24, tzinfo=UTC)  # across the end of British Summer Time and a month
HOURS = 216
GB = 268.329  # the bundled table's United Kingdom, 2021


def _hourly_energy(db: psycopg.Connection[Any], a: Tenant) -> pd.DataFrame:
    """Nine days of hourly energy on the tenant's circuit, panel and site root."""
    rng = np.random.default_rng(8428)
    nodes = [r[0] for r in db.execute("SELECT id FROM nodes WHERE site_id = %s ORDER BY id", (a.site_id,))]
    rows = [(node, START + timedelta(hours=h), float(rng.uniform(500, 4000)))
            for node in nodes for h in range(HOURS)]
    with db.cursor() as cur:
        cur.executemany("""INSERT INTO rollups_1h (node_id, bucket, energy_wh, mean_power_w, max_power_w,
                                                   mean_current_a, samples, coverage)
                           VALUES (%s, %s, %s, 0, 0, 0, 360, 1)""", rows)
    back = db.execute("SELECT node_id, bucket, energy_wh FROM rollups_1h WHERE node_id = ANY(%s) AND bucket >= %s "
                      "AND bucket < %s", (nodes, START, START + timedelta(hours=HOURS))).fetchall()
    return pd.DataFrame(back, columns=["node_id", "bucket", "energy_wh"])


def _emissions(client: TestClient, token: str, site_id: int, by: str = "total", t_from: datetime = START,
               hours: int = HOURS) -> Any:
    res = client.get(f"/v1/sites/{site_id}/emissions", headers=auth(token),
                     params={"from": t_from.isoformat(), "to": (t_from + timedelta(hours=hours)).isoformat(), "by": by})
    assert res.status_code == 200, res.text
    return res.json()


def test_co2e_by_node_and_period_matches_the_reference(db: psycopg.Connection[Any], client: TestClient,
                                                        tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    energy = _hourly_energy(db, a)
    fm, viewer = a.tokens["facility_manager"], a.tokens["viewer"]

    # 1. The country's factor (the tenant's site is in GB), with its source and year.
    factor = client.get(f"/v1/sites/{a.site_id}/emission-factor", headers=auth(viewer)).json()
    assert factor["origin"] == "country" and factor["g_co2e_per_kwh"] == GB and factor["year"] == 2021
    assert "Our World in Data" in factor["source"]
    table = {g["country"]: g for g in client.get("/v1/grid-factors", headers=auth(viewer)).json()}
    assert table["GB"]["g_co2e_per_kwh"] == GB and len(table) > 200

    # 2. An hourly series for the second day, uploaded as CSV: it wins for its hours.
    rng = np.random.default_rng(1)
    series = {START + timedelta(hours=24 + h): round(float(rng.uniform(80, 320)), 1) for h in range(24)}
    csv = "hour,g_co2e_per_kwh\n" + "".join(f"{h.isoformat()},{g}\n" for h, g in series.items())
    res = client.post(f"/v1/sites/{a.site_id}/co2e-hourly.csv", headers=auth(fm),
                      files={"file": ("grid.csv", csv.encode())})
    assert res.status_code == 200 and res.json() == {"stored": 24}, res.text

    def reference(annual: float, by: str) -> pd.DataFrame:
        stored = dict(db.execute("SELECT hour, g_per_kwh FROM site_co2e_hourly WHERE site_id = %s",
                                 (a.site_id,)).fetchall())
        e = energy.copy()
        e["g"] = [stored.get(t, annual) for t in e.bucket]
        e["kg"] = e.energy_wh * e.g / 1e6
        local = e.bucket.dt.tz_convert(ZoneInfo("Europe/London"))
        e["period"] = {"total": None, "day": local.dt.date,
                       "month": local.dt.tz_localize(None).dt.to_period("M").dt.start_time.dt.date}[by]
        keys = ["node_id"] if by == "total" else ["node_id", "period"]
        return e.groupby(keys).agg(kwh=("energy_wh", lambda s: s.sum() / 1000), kg=("kg", "sum")).reset_index()

    for by in ("total", "day", "month"):
        got = _emissions(client, viewer, a.site_id, by)
        assert got["factor"]["hourly_hours"] == 24
        ref = reference(GB, by)
        assert len(got["rows"]) == len(ref), by
        for row, (_, want) in zip(got["rows"], ref.iterrows(), strict=True):
            assert row["node_id"] == want.node_id
            if by != "total":
                assert row["period"] == want.period.isoformat()
            assert row["energy_kwh"] == pytest.approx(want.kwh, rel=1e-9), (by, row)
            assert row["kg_co2e"] == pytest.approx(want.kg, rel=1e-9)
            assert row["unfactored_kwh"] == 0
    # Local days of Europe/London: the first starts at 01:00 BST (23 hours), the clocks go back
    # on 25 October (25 hours), the last is a whole GMT day.
    days = {r["period"]: r for r in _emissions(client, viewer, a.site_id, "day")["rows"]
            if r["node_id"] == a.circuit_id}
    assert list(days) == [f"2026-10-{d}" for d in range(24, 32)] + ["2026-11-01"]
    circuit = energy[energy.node_id == a.circuit_id].set_index("bucket").energy_wh
    assert days["2026-10-25"]["energy_kwh"] == pytest.approx(
        circuit[datetime(2026, 10, 24, 23, tzinfo=UTC):datetime(2026, 10, 26, tzinfo=UTC)].sum() / 1000 -
        circuit[datetime(2026, 10, 26, tzinfo=UTC)] / 1000, rel=1e-9)  # 23:00 UTC on the 24th to 00:00 GMT on the 26th

    # A virtual meter (the panel less its circuit) is counted node by node at the same factors.
    meter = virtual_meters.save_meter(db, None, a.customer_id, "Panel rest", [
        virtual_meters.Term(1, node_id=a.panel_id), virtual_meters.Term(-1, node_id=a.circuit_id)])
    got = client.get(f"/v1/virtual-meters/{meter}/emissions", headers=auth(viewer), params={
        "from": START.isoformat(), "to": (START + timedelta(hours=HOURS)).isoformat()}).json()
    ref = reference(GB, "total").set_index("node_id")
    assert got["kg_co2e"] == pytest.approx(ref.kg[a.panel_id] - ref.kg[a.circuit_id], rel=1e-9, abs=1e-12)
    assert got["energy_kwh"] == pytest.approx(ref.kwh[a.panel_id] - ref.kwh[a.circuit_id], rel=1e-9, abs=1e-12)

    # 3. The site's own factor replaces the country's; null goes back. Each change is audited.
    res = client.put(f"/v1/sites/{a.site_id}/emission-factor", headers=auth(fm),
                     json={"g_co2e_per_kwh": 150.0, "source": "Supplier fuel mix 2025"})
    assert res.status_code == 200, res.text
    assert res.json()["origin"] == "site" and res.json()["source"] == "Supplier fuel mix 2025"
    total = {r["node_id"]: r for r in _emissions(client, viewer, a.site_id)["rows"]}
    for _, want in reference(150.0, "total").iterrows():
        assert total[want.node_id]["kg_co2e"] == pytest.approx(want.kg, rel=1e-9)
    assert client.put(f"/v1/sites/{a.site_id}/emission-factor", headers=auth(fm),
                      json={"g_co2e_per_kwh": None}).json()["origin"] == "country"
    assert count(db, "SELECT count(*) FROM audit_log WHERE subject_type = 'site_emission_factor'") == 2

    # 4. A country the table lacks, and no factor of the site's own: CO2e is unknown, not zero,
    # except where the hourly series covers the hours.
    db.execute("UPDATE sites SET country = 'XK' WHERE id = %s", (a.site_id,))
    got = _emissions(client, viewer, a.site_id)
    assert got["factor"]["origin"] == "none" and got["factor"]["g_co2e_per_kwh"] is None
    assert all(r["kg_co2e"] is None and r["unfactored_kwh"] > 0 for r in got["rows"])
    covered = _emissions(client, viewer, a.site_id, t_from=START + timedelta(hours=24), hours=24)["rows"]
    assert all(r["kg_co2e"] is not None and r["unfactored_kwh"] == 0 for r in covered)
    bench = client.get(f"/v1/customers/{a.customer_id}/benchmark", headers=auth(a.tokens["customer_admin"]),
                       params={"from": START.isoformat(), "to": (START + timedelta(hours=HOURS)).isoformat()}).json()
    assert [b["kg_co2e"] for b in bench if b["site_id"] == a.site_id] == [None]

    # 5. Tenants apart: B sees no A site; a viewer may not write.
    assert client.get(f"/v1/sites/{a.site_id}/emissions", headers=auth(b.tokens["facility_manager"]),
                      params={"from": START.isoformat(), "to": (START + timedelta(hours=1)).isoformat()}
                      ).status_code == 404
    assert client.put(f"/v1/sites/{a.site_id}/emission-factor", headers=auth(viewer),
                      json={"g_co2e_per_kwh": 1.0}).status_code == 403


def test_bad_factors_are_refused_with_a_reason_and_store_nothing(db: psycopg.Connection[Any], client: TestClient,
                                                                tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    fm = auth(a.tokens["facility_manager"])
    csv = ("hour,g_co2e_per_kwh\n2026-01-01T00:00:00Z,100\n2026-01-01T00:30:00Z,100\n2026-01-01T01:00:00,90\n"
           "2026-01-01T02:00:00Z,-5\nyesterday,1\n2026-01-01T03:00:00Z,lots\n2026-01-01T00:00:00+00:00,7\n")
    res = client.post(f"/v1/sites/{a.site_id}/co2e-hourly.csv", headers=fm, files={"file": ("g.csv", csv.encode())})
    assert res.status_code == 422, res.text
    rows = {r["line"]: r["detail"] for r in res.json()["rows"]}
    for line, why in ((3, "not the start of an hour"), (4, "no UTC offset"), (5, "outside 0..2000"),
                      (6, "is not a time"), (7, "is not a number"), (8, "given twice")):
        assert why in rows.get(line, ""), (line, why, rows)
    assert set(rows) == {3, 4, 5, 6, 7, 8}
    assert count(db, "SELECT count(*) FROM site_co2e_hourly") == 0
    assert client.post(f"/v1/sites/{a.site_id}/co2e-hourly.csv", headers=fm,
                       files={"file": ("g.csv", b"when,g\n1,2\n")}).status_code == 422
    assert client.post(f"/v1/sites/{a.site_id}/co2e-hourly.csv", headers=fm,
                       files={"file": ("g.csv", b"hour,g_co2e_per_kwh\n\xff\n")}).status_code == 422
    for body in ({"g_co2e_per_kwh": 2001}, {"g_co2e_per_kwh": -1}, {"g_co2e_per_kwh": 10, "source": "x" * 201}):
        assert client.put(f"/v1/sites/{a.site_id}/emission-factor", headers=fm, json=body).status_code == 422
    res = client.get(f"/v1/sites/{a.site_id}/emissions", headers=fm,
                     params={"from": "2026-11-01T00:30:00Z", "to": "2026-11-02T00:00:00Z"})
    assert res.status_code == 422 and "start of an hour" in res.text
    with pytest.raises(RowErrors):
        emissions.save_hourly(db, None, a.site_id, [emissions.HourFactor(datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC),
                                                                         1.0)], source="api")
    assert count(db, "SELECT count(*) FROM site_co2e_hourly") == 0
