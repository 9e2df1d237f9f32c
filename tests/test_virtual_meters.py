"""Virtual meters (#22): named groups of nodes with + and − terms, through the API, against
a pandas reference built from the nodes' own rollups read back from the database."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.factories import FLAT_BANDS, Tenant, auth, count, drain, write
from wattline.domain import Connection, Resolution
from wattline.site_builder import CircuitSpec, PanelSpec, SensorSpec, SiteSpec, TariffSpec, build_site

AMPS = {"A1": 5.0, "A2": 7.0, "A3": 11.0, "B1": 13.0, "K1": 3.0}


@dataclass
class Plant:
    nodes: dict[str, int]  # external ref -> node id, both sites
    sites: tuple[int, int]
    t0: float


@pytest.fixture
def plant(db: psycopg.Connection[Any], database_url: str, tenants: tuple[Tenant, Tenant]) -> Plant:
    """Two sites of tenant A's customer: boards A (A1-A3) and B (B1) under an MSB, and a
    second site with one circuit; two hours of readings, rolled up."""
    a = tenants[0]
    tariff = TariffSpec("Flat", "GBP", datetime(2024, 1, 1, tzinfo=UTC), FLAT_BANDS)

    def board(ref: str, circuits: list[str]) -> PanelSpec:
        return PanelSpec(ref, f"Board {ref}", 230.0, 1.0, Connection.SINGLE_PHASE, circuits=tuple(
            CircuitSpec(c, f"Circuit {c}", (SensorSpec(f"CT-VM-{c}", "BR-VM-1"),)) for c in circuits),
            feeder=CircuitSpec(f"F{ref}", f"Feeder {ref}"))

    one = build_site(db, a.customer_id, SiteSpec(
        "Plant 1", timezone="Europe/London", bridges=("BR-VM-1",), tariff=tariff,
        panels=(PanelSpec("MSB", "MSB", 230.0, 1.0, Connection.SINGLE_PHASE,
                          sub_panels=(board("A", ["A1", "A2", "A3"]), board("B", ["B1"]))),)))
    two = build_site(db, a.customer_id, SiteSpec(
        "Plant 2", timezone="Europe/London", bridges=("BR-VM-2",), tariff=tariff,
        panels=(PanelSpec("MSB2", "MSB 2", 230.0, 1.0, Connection.SINGLE_PHASE, circuits=(
            CircuitSpec("K1", "Kitchen", (SensorSpec("CT-VM-K1", "BR-VM-2"),)),)),)))
    t0 = (time.time() // 3600) * 3600 - 3 * 3600
    rng = np.random.default_rng(22)
    for bridge, refs in (("BR-VM-1", ["A1", "A2", "A3", "B1"]), ("BR-VM-2", ["K1"])):
        readings = [(f"CT-VM-{ref}", t0 + k * 10, float(AMPS[ref] + rng.uniform(-1, 1)))
                    for k in range(2 * 360 + 1) for ref in refs]
        write(database_url, readings, bridge=bridge)
    drain(db)
    return Plant({**one.nodes, **two.nodes, "ROOT1": one.root, "ROOT2": two.root}, (one.site_id, two.site_id), t0)


def wide(frame: pd.DataFrame, nodes: list[int]) -> dict[str, pd.DataFrame]:
    """Per quantity, one column per node (NaN where a node has no row), one row per bucket."""
    return {q: frame.pivot(index="bucket", columns="node", values=q).reindex(columns=nodes)
            for q in ("energy", "power", "coverage")}


def hourly(db: psycopg.Connection[Any], nodes: list[int]) -> dict[str, pd.DataFrame]:
    """The nodes' hourly rollups, as read back from the database."""
    rows = db.execute("""SELECT node_id, extract(epoch FROM bucket)::float8, energy_wh, mean_power_w, coverage
                         FROM rollups_1h WHERE node_id = ANY(%s)""", (nodes,)).fetchall()
    return wide(pd.DataFrame(rows, columns=["node", "bucket", "energy", "power", "coverage"]), nodes)


def create(client: TestClient, token: str, name: str, terms: list[tuple[str, int]], **extra: Any) -> Any:
    return client.post("/v1/virtual-meters", headers=auth(token), json={
        "name": name, "terms": [{"sign": s, "node_id": n} for s, n in terms], **extra})


def series(client: TestClient, token: str, meter: int, t0: float) -> pd.DataFrame:
    got = client.get(f"/v1/virtual-meters/{meter}/measurements", headers=auth(token), params={
        "from": datetime.fromtimestamp(t0, UTC).isoformat(),
        "to": datetime.fromtimestamp(t0 + 4 * 3600, UTC).isoformat(), "resolution": "1h"})
    assert got.status_code == 200, got.text
    frame = pd.DataFrame(got.json())
    frame.index = pd.to_datetime(frame["bucket"]).map(lambda t: t.timestamp())
    return frame


def test_a_meter_adds_and_subtracts_parts_of_the_tree(client: TestClient, db: psycopg.Connection[Any],
                                                     tenants: tuple[Tenant, Tenant], plant: Plant) -> None:
    token, n = tenants[0].tokens["facility_manager"], plant.nodes
    made = create(client, token, "Board A without A3", [("+", n["A"]), ("-", n["A3"])])
    assert made.status_code == 201, made.text
    got = series(client, token, made.json()["id"], plant.t0)
    ref = hourly(db, [n["A"], n["A3"], n["A1"], n["A2"]])
    expected = ref["energy"][n["A"]] - ref["energy"][n["A3"]]
    assert len(got) == len(ref["energy"]) >= 2
    np.testing.assert_allclose(got["energy_wh"].to_numpy(), expected.loc[got.index].to_numpy(), rtol=1e-9)
    # the physics holds too: a board without its own meter is its circuits, so A − A3 = A1 + A2
    np.testing.assert_allclose(got["energy_wh"].to_numpy(),
                               (ref["energy"][n["A1"]] + ref["energy"][n["A2"]]).loc[got.index].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(got["mean_power_w"].to_numpy(),
                               (ref["power"][n["A"]] - ref["power"][n["A3"]]).loc[got.index].to_numpy(), rtol=1e-9)
    assert (got["coverage"] <= ref["coverage"].min(axis="columns").loc[got.index] + 1e-9).all()
    assert count(db, "SELECT count(*) FROM audit_log WHERE subject_type = 'virtual_meter' AND action = 'create'") == 1


def test_a_meter_spans_sites_and_counts_other_meters(client: TestClient, db: psycopg.Connection[Any],
                                                    tenants: tuple[Tenant, Tenant], plant: Plant) -> None:
    token, n = tenants[0].tokens["customer_admin"], plant.nodes
    kitchens = create(client, token, "Kitchens", [("+", n["B1"]), ("+", n["K1"])]).json()["id"]
    both = client.post("/v1/virtual-meters", headers=auth(token), json={
        "name": "Kitchens and board A",
        "terms": [{"sign": "+", "meter_id": kitchens}, {"sign": "+", "node_id": n["A"]}]})
    assert both.status_code == 201, both.text
    got = series(client, token, both.json()["id"], plant.t0)
    ref = hourly(db, [n["B1"], n["K1"], n["A"]])
    expected = ref["energy"].fillna(0).sum(axis="columns")
    np.testing.assert_allclose(got["energy_wh"].to_numpy(), expected.loc[got.index].to_numpy(), rtol=1e-9)

    # A meter that another counts cannot go, and a node in a meter cannot be deleted
    gone = client.delete(f"/v1/virtual-meters/{kitchens}", headers=auth(token))
    assert gone.status_code == 409 and "Kitchens and board A" in gone.json()["detail"]
    node = client.delete(f"/v1/nodes/{n['K1']}", headers=auth(token))
    assert node.status_code == 409 and "virtual meter" in node.json()["detail"], node.text

    # the meter's cost is the nodes' costs, each on its own site's tariff
    window = {"from": datetime.fromtimestamp(plant.t0, UTC).isoformat(),
              "to": datetime.fromtimestamp(plant.t0 + 4 * 3600, UTC).isoformat()}
    cost = client.get(f"/v1/virtual-meters/{both.json()['id']}/cost", headers=auth(token), params=window)
    assert cost.status_code == 200, cost.text
    node_cost: dict[int, Decimal] = {}
    for site in plant.sites:
        answer = client.get(f"/v1/sites/{site}/cost", headers=auth(token), params=window).json()
        node_cost |= {x["node_id"]: Decimal(x["energy_cost"]) for x in answer["nodes"]}
    assert Decimal(cost.json()["energy_cost"]) == node_cost[n["B1"]] + node_cost[n["K1"]] + node_cost[n["A"]]
    assert cost.json()["currency"] == "GBP"


@pytest.mark.parametrize(("terms", "title", "said"), [
    ([("+", "A"), ("+", "A1")], "Double counting", "added twice"),
    ([("+", "MSB"), ("-", "A"), ("-", "A1")], "Double counting", "subtracted twice"),
    ([("+", "A1"), ("+", "A1")], "Double counting", "more than once"),
    ([("+", "A1"), ("-", "A1")], "Terms cancel out", "both added and subtracted"),
    ([("-", "A1")], "Nothing to subtract", "no term counts it"),
    ([("+", "B"), ("-", "A1")], "Nothing to subtract", "no term counts it"),
])
def test_double_counting_is_refused_with_the_reason(client: TestClient, db: psycopg.Connection[Any],
                                                   tenants: tuple[Tenant, Tenant], plant: Plant,
                                                   terms: list[tuple[str, str]], title: str, said: str) -> None:
    answer = create(client, tenants[0].tokens["facility_manager"], "Bad", [(s, plant.nodes[r]) for s, r in terms])
    assert answer.status_code == 422, answer.text
    assert answer.json()["title"] == title and said in answer.json()["detail"]
    assert count(db, "SELECT count(*) FROM virtual_meters") == 0


def test_a_cycle_is_refused_and_the_meter_stays_as_it_was(client: TestClient, db: psycopg.Connection[Any],
                                                         tenants: tuple[Tenant, Tenant], plant: Plant) -> None:
    token, n = tenants[0].tokens["facility_manager"], plant.nodes
    first = create(client, token, "First", [("+", n["A1"])]).json()["id"]
    second = client.post("/v1/virtual-meters", headers=auth(token), json={
        "name": "Second", "terms": [{"sign": "+", "meter_id": first}, {"sign": "+", "node_id": n["B1"]}]}).json()["id"]
    loop = client.put(f"/v1/virtual-meters/{first}", headers=auth(token), json={
        "name": "First", "terms": [{"sign": "+", "meter_id": second}]})
    assert loop.status_code == 422 and loop.json()["title"] == "Cycle", loop.text
    assert "First → Second → First" in loop.json()["detail"]
    itself = client.put(f"/v1/virtual-meters/{first}", headers=auth(token), json={
        "name": "First", "terms": [{"sign": "+", "meter_id": first}]})
    assert itself.status_code == 422 and itself.json()["title"] == "Cycle"
    kept = client.get(f"/v1/virtual-meters/{first}", headers=auth(token)).json()
    assert kept["terms"] == [{"sign": "+", "node_id": n["A1"], "meter_id": None}]


def test_meters_keep_to_their_tenant(client: TestClient, tenants: tuple[Tenant, Tenant], plant: Plant) -> None:
    a, b = tenants
    mine = create(client, a.tokens["facility_manager"], "Mine", [("+", plant.nodes["A1"])]).json()["id"]
    assert client.get(f"/v1/virtual-meters/{mine}", headers=auth(b.tokens["customer_admin"])).status_code == 404
    assert client.get("/v1/virtual-meters", headers=auth(b.tokens["customer_admin"])).json() == []
    theirs = create(client, b.tokens["facility_manager"], "Theirs", [("+", plant.nodes["A1"])])
    assert theirs.status_code == 404 and "node" in theirs.json()["detail"]
    named = create(client, a.tokens["reseller_admin"], "For B", [("+", b.circuit_id)], customer_id=b.customer_id)
    assert named.status_code == 404  # another reseller's customer is not found
    assert client.post("/v1/virtual-meters", headers=auth(a.tokens["viewer"]), json={
        "name": "x", "terms": [{"sign": "+", "node_id": plant.nodes["A1"]}]}).status_code == 403
    dup = create(client, a.tokens["facility_manager"], "Mine", [("+", plant.nodes["A2"])])
    assert dup.status_code == 409
    both = client.post("/v1/virtual-meters", headers=auth(a.tokens["facility_manager"]), json={
        "name": "x", "terms": [{"sign": "+", "node_id": plant.nodes["A1"], "meter_id": mine}]})
    assert both.status_code == 422


@pytest.mark.parametrize("seed", range(6))
def test_the_weighted_series_equals_a_pandas_reference(db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant],
                                                      plant: Plant, seed: int) -> None:
    """The database's Σ weight × node per bucket against pandas, on random rows with holes
    (a node without a row in a bucket: coverage 0 there), random signs and values."""
    from wattline.principal import acting_for
    from wattline.queries import weighted_series

    rng = np.random.default_rng(seed)
    nodes = [plant.nodes[r] for r in ("A1", "A2", "A3", "B1", "K1")]
    weights = {n: int(rng.choice([1, -1])) for n in nodes}
    t0 = datetime(2020, 1, 6, tzinfo=UTC).timestamp()
    rows = [(n, t0 + k * 900.0, float(rng.uniform(0, 1e4)), float(rng.uniform(0, 4e4)), float(rng.uniform(0, 1)))
            for n in nodes for k in range(96) if rng.random() > 0.2]
    with db.cursor() as cur:
        cur.executemany("""INSERT INTO rollups_15m (node_id, bucket, energy_wh, mean_power_w, max_power_w,
                                                    mean_current_a, samples, coverage)
                           VALUES (%s, to_timestamp(%s), %s, %s, 0, 0, 1, %s)""", rows)
    got = weighted_series(db, acting_for(tenants[0].customer_id), weights, Resolution.MIN15,
                          datetime.fromtimestamp(t0, UTC), datetime.fromtimestamp(t0 + 86400, UTC))
    ref = wide(pd.DataFrame(rows, columns=["node", "bucket", "energy", "power", "coverage"]), nodes)
    w = pd.Series(weights, dtype=float)
    assert [r["bucket_s"] for r in got] == ref["energy"].index.tolist()
    np.testing.assert_allclose([r["energy_wh"] for r in got], (ref["energy"].fillna(0) * w).sum(axis="columns"),
                               rtol=1e-12)
    np.testing.assert_allclose([r["mean_power_w"] for r in got], (ref["power"].fillna(0) * w).sum(axis="columns"),
                               rtol=1e-12)
    np.testing.assert_allclose([r["coverage"] for r in got], ref["coverage"].fillna(0).min(axis="columns"))


def test_an_alert_rule_watches_a_meter(client: TestClient, db: psycopg.Connection[Any],
                                       tenants: tuple[Tenant, Tenant], plant: Plant) -> None:
    """A threshold on "board A without A3" opens one episode over the hours of data; its peak
    is the peak of A − A3 per minute, read back from the database. Kinds that belong to sites
    and nodes are refused for a meter, and a meter with a rule cannot be deleted."""
    from alerts.evaluate import Clock
    from alerts.scheduler import evaluate_rule

    a, b = tenants
    token, n = a.tokens["facility_manager"], plant.nodes
    meter = create(client, token, "Board A without A3", [("+", n["A"]), ("-", n["A3"])]).json()["id"]
    rule = {"name": "Line busy", "virtual_meter_id": meter, "params": {"kind": "threshold", "above_w": 100}}
    made = client.post(f"/v1/sites/{plant.sites[0]}/alert-rules", headers=auth(token), json=rule)
    assert made.status_code == 201, made.text
    tried = client.post(f"/v1/sites/{plant.sites[0]}/alert-rules/backtest", headers=auth(token), json={
        "virtual_meter_id": meter, "params": rule["params"]})
    assert tried.status_code == 200 and len(tried.json()["episodes"]) == 1, tried.text
    evaluate_rule(db, made.json()["id"], Clock(datetime.now(UTC)))
    episodes = db.execute("SELECT subject, detail FROM alert_episodes WHERE rule_id = %s",
                          (made.json()["id"],)).fetchall()
    assert [e[0] for e in episodes] == [f"meter-{meter}"]
    power = dict(db.execute("""SELECT bucket, sum(CASE WHEN node_id = %s THEN mean_power_w ELSE -mean_power_w END)
                               FROM rollups_1m WHERE node_id = ANY(%s) GROUP BY bucket""",
                            (n["A"], [n["A"], n["A3"]])).fetchall())
    assert episodes[0][1]["peak_w"] == pytest.approx(max(power.values()), rel=1e-9)
    listed = client.get(f"/v1/sites/{plant.sites[0]}/alert-rules", headers=auth(token)).json()
    assert [r["virtual_meter_id"] for r in listed if r["name"] == "Line busy"] == [meter]

    offline = client.post(f"/v1/sites/{plant.sites[0]}/alert-rules", headers=auth(token), json={
        "name": "x", "virtual_meter_id": meter, "params": {"kind": "sensor_offline"}})
    assert offline.status_code == 422 and "virtual meter" in offline.json()["detail"], offline.text
    both = client.post(f"/v1/sites/{plant.sites[0]}/alert-rules", headers=auth(token), json={
        **rule, "node_id": n["A1"]})
    assert both.status_code == 422
    theirs = client.post(f"/v1/sites/{b.site_id}/alert-rules", headers=auth(b.tokens["facility_manager"]),
                         json=rule)
    assert theirs.status_code == 404
    gone = client.delete(f"/v1/virtual-meters/{meter}", headers=auth(token))
    assert gone.status_code == 409 and "Line busy" in gone.json()["detail"], gone.text
