"""Degree days (#22): temperatures in, HDD/CDD at the site's bases, a regression baseline,
savings of a project and the weather-normalised benchmark, through the API, against a
pandas / numpy reference built from the daily rollups read back from the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.degree_days import MIN_DAYS, fit_baseline
from tests.factories import Tenant, auth, count, drain, write
from wattline.domain import Connection
from wattline.site_builder import CircuitSpec, PanelSpec, SensorSpec, SiteSpec, build_site

LONDON = ZoneInfo("Europe/London")
TRUE = (40.0, 3.0, 5.0)  # kWh/day = 40 + 3·HDD + 5·CDD at the default bases 15.5 / 22 °C
DAYS = 24  # of readings; a project starts on day 18 and saves 10 %
PROJECT_DAY = 18


@dataclass
class Weather:
    sites: tuple[int, int]
    day0: date
    temps: dict[int, list[float]]  # site id -> mean °C of days 0..DAYS-1


def kwh_per_day(mean_c: float) -> float:
    a, b, c = TRUE
    return a + b * max(15.5 - mean_c, 0.0) + c * max(mean_c - 22.0, 0.0)


@pytest.fixture
def weather(db: psycopg.Connection[Any], database_url: str, client: TestClient,
            tenants: tuple[Tenant, Tenant]) -> Weather:
    """Tenant A's site and a second, colder site of the same customer, both on the same
    energy-against-weather law; 24 days of 20-second readings ending a week ago, rolled up,
    and the days' mean temperatures stored through the API (CSV, then JSON)."""
    a = tenants[0]
    two = build_site(db, a.customer_id, SiteSpec(
        "Site A2", timezone="Europe/London", bridges=("BR-A2",), panels=(PanelSpec(
            "A2-MSB", "MSB", 230.0, 1.0, Connection.SINGLE_PHASE,
            circuits=(CircuitSpec("A2-C1", "Boiler room", (SensorSpec("CT-A2-1", "BR-A2"),)),)),)))
    day0 = datetime.now(LONDON).date() - timedelta(days=DAYS + 6)
    rng = np.random.default_rng(22)
    warm = (13.0 + 10.0 * np.sin(np.arange(DAYS) * 0.7) + rng.normal(0, 1.5, DAYS)).round(1).tolist()
    temps = {a.site_id: warm, two.site_id: [round(t - 4.0, 1) for t in warm]}
    for site_id, serial, bridge in ((a.site_id, a.sensor_serial, a.bridge_serial), (two.site_id, "CT-A2-1", "BR-A2")):
        readings: list[tuple[str, float, float]] = []
        for d in range(DAYS):
            start = datetime.combine(day0 + timedelta(days=d), datetime.min.time(), LONDON).timestamp()
            end = datetime.combine(day0 + timedelta(days=d + 1), datetime.min.time(), LONDON).timestamp()
            saving = 0.9 if site_id == a.site_id and d >= PROJECT_DAY else 1.0
            amps = saving * kwh_per_day(temps[site_id][d]) * 1000 / 230 / ((end - start) / 3600)
            readings += [(serial, t, amps) for t in np.arange(start, end, 20.0).tolist()]
        write(database_url, readings, bridge=bridge)
        days = [(day0 + timedelta(days=d), t) for d, t in enumerate(temps[site_id])]
        csv = "day,mean_c\n" + "".join(f"{d},{t}\n" for d, t in days[:12])
        res = client.post(f"/v1/sites/{site_id}/temperatures.csv", headers=auth(a.tokens["facility_manager"]),
                          files={"file": ("t.csv", csv.encode())})
        assert res.status_code == 200 and res.json() == {"stored": 12}, res.text
        res = client.put(f"/v1/sites/{site_id}/temperatures", headers=auth(a.tokens["facility_manager"]),
                         json={"days": [{"day": str(d), "mean_c": t} for d, t in days[12:]]})
        assert res.status_code == 200 and res.json() == {"stored": DAYS - 12}, res.text
    drain(db)  # 36 sensor-days of history: about 25 s here, most of the fixture
    return Weather((a.site_id, two.site_id), day0, temps)


def reference(db: psycopg.Connection[Any], site_id: int, first: date, last: date) -> pd.DataFrame:
    """Per local day: the site root's daily rollup read back, the temperature, HDD and CDD."""
    rows = db.execute("""SELECT (r.bucket AT TIME ZONE 'Europe/London')::date, r.energy_wh / 1000, r.coverage
                         FROM rollups_1d r JOIN nodes n ON n.id = r.node_id AND n.kind = 'site'
                         WHERE n.site_id = %s""", (site_id,)).fetchall()
    energy = pd.DataFrame(rows, columns=["day", "kwh", "coverage"]).set_index("day")
    temps = pd.DataFrame(db.execute("SELECT day, mean_c FROM site_temperatures WHERE site_id = %s",
                                    (site_id,)).fetchall(), columns=["day", "mean_c"]).set_index("day")
    frame = temps.join(energy, how="inner")
    frame = frame[(frame.index >= first) & (frame.index <= last) & (frame["coverage"] >= 0.9)].sort_index()
    frame["hdd"] = (15.5 - frame["mean_c"]).clip(lower=0)
    frame["cdd"] = (frame["mean_c"] - 22.0).clip(lower=0)
    return frame


def normal_equations(frame: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.float64]]:
    x = np.column_stack([np.ones(len(frame)), frame["hdd"], frame["cdd"]])
    return np.linalg.solve(x.T @ x, x.T @ frame["kwh"].to_numpy())


def test_baseline_savings_benchmark_and_bases_match_the_reference(
        client: TestClient, db: psycopg.Connection[Any], weather: Weather, tenants: tuple[Tenant, Tenant]) -> None:
    """One test, because its fixture rolls up 36 sensor-days of history."""
    a = tenants[0]
    site = weather.sites[0]
    start = weather.day0 + timedelta(days=PROJECT_DAY)
    res = client.get(f"/v1/sites/{site}/baseline", headers=auth(a.tokens["viewer"]),
                     params={"from": str(weather.day0), "to": str(start)})
    assert res.status_code == 200, res.text
    got = res.json()
    frame = reference(db, site, weather.day0, start - timedelta(days=1))
    assert got["days"] == len(frame) == PROJECT_DAY
    assert got["terms"] == ["hdd", "cdd"]
    coef = normal_equations(frame)
    assert [got["intercept_kwh"], got["hdd_slope_kwh"], got["cdd_slope_kwh"]] == pytest.approx(coef.tolist(), rel=1e-6)
    assert coef.tolist() == pytest.approx(TRUE, rel=0.01)  # the law the readings were made from
    residual = frame["kwh"] - np.column_stack([np.ones(len(frame)), frame["hdd"], frame["cdd"]]) @ coef
    assert got["r2"] == pytest.approx(1 - (residual ** 2).sum() / ((frame["kwh"] - frame["kwh"].mean()) ** 2).sum())
    assert got["cv_rmse"] == pytest.approx(np.sqrt((residual ** 2).sum() / (len(frame) - 3)) / frame["kwh"].mean())

    # A project from day 15, its baseline the 15 days before; the readings were cut by 10 %.
    made = client.post(f"/v1/sites/{site}/savings-projects", headers=auth(a.tokens["facility_manager"]),
                       json={"name": "LED retrofit", "starts_on": str(start), "baseline_days": PROJECT_DAY})
    assert made.status_code == 201, made.text
    again = client.post(f"/v1/sites/{site}/savings-projects", headers=auth(a.tokens["facility_manager"]),
                        json={"name": "LED retrofit", "starts_on": str(start)})
    assert again.status_code == 409 and "LED retrofit" in again.json()["detail"]
    res = client.get(f"/v1/savings-projects/{made.json()['id']}/savings", headers=auth(a.tokens["viewer"]))
    assert res.status_code == 200, res.text
    got = res.json()
    after = reference(db, site, start, start + timedelta(days=DAYS))
    expected = float((coef[0] + coef[1] * after["hdd"] + coef[2] * after["cdd"]).sum())
    assert got["counted_days"] == DAYS - PROJECT_DAY
    assert got["missing_days"] == (datetime.now(LONDON).date() - start).days - (DAYS - PROJECT_DAY)
    assert got["metered_kwh"] == pytest.approx(after["kwh"].sum(), rel=1e-9)
    assert got["expected_kwh"] == pytest.approx(expected, rel=1e-6)
    assert got["savings_percent"] == pytest.approx(10.0, abs=0.3)
    counted = [d for d in got["days"] if d["metered_kwh"] is not None and d["predicted_kwh"] is not None]
    assert sum(d["savings_kwh"] for d in counted) == pytest.approx(got["savings_kwh"])
    assert count(db, "SELECT count(*) FROM audit_log WHERE subject_type = 'savings_project'") == 1

    # The benchmark: both sites follow one law and the colder one uses more; at the same
    # weather they are level.
    mild_id, cold_id = weather.sites
    first = 13  # days 13-14: heating only, at both sites and at the reference weather
    t_from = datetime.combine(weather.day0 + timedelta(days=first), datetime.min.time(), LONDON)
    t_to = datetime.combine(weather.day0 + timedelta(days=PROJECT_DAY), datetime.min.time(), LONDON)
    res = client.get(f"/v1/customers/{a.customer_id}/benchmark", headers=auth(a.tokens["viewer"]),
                     params={"from": t_from.isoformat(), "to": t_to.isoformat()})
    assert res.status_code == 200, res.text
    rows = {r["site_id"]: r for r in res.json()}
    mild, cold = rows[mild_id], rows[cold_id]
    assert cold["energy_kwh"] > mild["energy_kwh"] * 1.05
    assert cold["hdd"] == pytest.approx(sum(max(15.5 - t, 0) for t in weather.temps[cold_id][first:PROJECT_DAY]))
    assert cold["kwh_weather_normalised"] == pytest.approx(mild["kwh_weather_normalised"], rel=0.005)
    # The reference weather is the mean of the two sites' days, so each moves halfway.
    law = sum(kwh_per_day(t - 2.0) for t in weather.temps[mild_id][first:PROJECT_DAY])
    assert mild["kwh_weather_normalised"] == pytest.approx(law, rel=0.005)

    span = {"from": str(weather.day0), "to": str(weather.day0 + timedelta(days=DAYS))}
    before = client.get(f"/v1/sites/{mild_id}/degree-days", headers=auth(a.tokens["viewer"]), params=span).json()
    assert [d["mean_c"] for d in before] == weather.temps[mild_id]
    assert [d["hdd"] for d in before] == pytest.approx([max(15.5 - t, 0) for t in weather.temps[mild_id]])
    assert client.patch(f"/v1/sites/{mild_id}", headers=auth(a.tokens["facility_manager"]),
                        json={"hdd_base_c": 18.0, "cdd_base_c": 24.0}).status_code == 200
    after = client.get(f"/v1/sites/{mild_id}/degree-days", headers=auth(a.tokens["viewer"]), params=span).json()
    assert [d["hdd"] for d in after] == pytest.approx([max(18.0 - t, 0) for t in weather.temps[mild_id]])
    assert [d["cdd"] for d in after] == pytest.approx([max(t - 24.0, 0) for t in weather.temps[mild_id]])
    energy = reference(db, mild_id, weather.day0, weather.day0 + timedelta(days=DAYS))["kwh"]
    assert [d["energy_kwh"] for d in after] == pytest.approx(energy.tolist())
    res = client.patch(f"/v1/sites/{mild_id}", headers=auth(a.tokens["facility_manager"]), json={"hdd_base_c": 99})
    assert res.status_code == 422


def test_fit_recovers_a_law_and_drops_a_term_that_never_varies() -> None:
    rng = np.random.default_rng(5)
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(60)]
    hdd = rng.uniform(0, 15, 60)
    kwh = 100 + 7 * hdd + rng.normal(0, 0.5, 60)
    b = fit_baseline(days, hdd, np.zeros(60), kwh)
    assert b.terms == ("hdd",) and b.cdd_slope_kwh == 0.0
    ref = np.polynomial.polynomial.polyfit(hdd, kwh, 1)
    assert [b.intercept_kwh, b.hdd_slope_kwh] == pytest.approx(ref.tolist(), rel=1e-9)
    assert b.r2 > 0.99


# -- bad input ----------------------------------------------------------------------------------
def test_a_bad_temperature_file_names_every_bad_line_and_stores_nothing(
        client: TestClient, db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant]) -> None:
    a = tenants[0]
    future = datetime.now(LONDON).date() + timedelta(days=5)
    csv = ("day,mean_c\n2026-01-01,4.5\n2026-13-01,3\n2026-01-03,warm\n2026-01-04,75\n2026-01-01,5\n"
           f"{future},2\n")
    res = client.post(f"/v1/sites/{a.site_id}/temperatures.csv", headers=auth(a.tokens["facility_manager"]),
                      files={"file": ("t.csv", csv.encode())})
    assert res.status_code == 422, res.text
    body = res.json()
    assert [r["line"] for r in body["rows"]] == [3, 4, 5, 6, 7]
    assert "twice" in body["rows"][3]["detail"] and "not ended" in body["rows"][4]["detail"]
    assert count(db, "SELECT count(*) FROM site_temperatures") == 0
    for bad, why in ((b"date,temp\n2026-01-01,4\n", "day,mean_c"), (b"day,mean_c\n", "no days"),
                     (b"day,mean_c\n2026-01-01,\xff\n", "UTF-8")):
        res = client.post(f"/v1/sites/{a.site_id}/temperatures.csv", headers=auth(a.tokens["facility_manager"]),
                          files={"file": ("t.csv", bad)})
        assert res.status_code == 422 and why in res.json()["detail"], res.text
    res = client.put(f"/v1/sites/{a.site_id}/temperatures", headers=auth(a.tokens["facility_manager"]),
                     json={"days": [{"day": "2026-01-01", "mean_c": 61}]})
    assert res.status_code == 422
    res = client.put(f"/v1/sites/{a.site_id}/temperatures", headers=auth(a.tokens["viewer"]),
                     json={"days": [{"day": "2026-01-01", "mean_c": 6}]})
    assert res.status_code == 403
    assert count(db, "SELECT count(*) FROM site_temperatures") == 0


def test_a_baseline_without_enough_days_says_how_many_it_has(client: TestClient,
                                                             tenants: tuple[Tenant, Tenant]) -> None:
    a = tenants[0]
    res = client.get(f"/v1/sites/{a.site_id}/baseline", headers=auth(a.tokens["viewer"]))
    assert res.status_code == 422 and res.json()["title"] == "Not enough data"
    assert f"needs {MIN_DAYS} whole days" in res.json()["detail"] and "there are 0" in res.json()["detail"]
    made = client.post(f"/v1/sites/{a.site_id}/savings-projects", headers=auth(a.tokens["facility_manager"]),
                       json={"name": "Chiller swap", "starts_on": "2026-01-01"})
    res = client.get(f"/v1/savings-projects/{made.json()['id']}/savings", headers=auth(a.tokens["viewer"]))
    assert res.status_code == 422 and res.json()["title"] == "Not enough data"
    res = client.get(f"/v1/sites/{a.site_id}/degree-days", headers=auth(a.tokens["viewer"]),
                     params={"from": "2026-02-01", "to": "2026-01-01"})
    assert res.status_code == 422
    assert client.get("/v1/savings-projects/999999/savings", headers=auth(a.tokens["viewer"])).status_code == 404
    res = client.post(f"/v1/sites/{a.site_id}/savings-projects", headers=auth(a.tokens["facility_manager"]),
                      json={"name": "x", "starts_on": "2026-01-01", "baseline_days": 3})
    assert res.status_code == 422


def test_the_simulators_weather_follows_the_seasons_of_each_hemisphere() -> None:
    from sensor_sim.weather import daily_mean_c, hvac_demand

    year = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]
    london, sydney = daily_mean_c(51.5, year), daily_mean_c(-33.87, year)
    winter, summer = slice(0, 59), slice(181, 243)  # Jan-Feb, Jul-Aug
    assert london[winter].mean() + 10 < london[summer].mean()
    assert sydney[winter].mean() > sydney[summer].mean() + 4
    assert 8 < london.mean() < 15 and london.min() > -15 and london.max() < 35
    # A day's value does not depend on the range it was asked in.
    assert daily_mean_c(51.5, year[100:110]).tolist() == london[100:110].tolist()
    # Heating or cooling works harder the further a day is from mild.
    demand = hvac_demand(np.array([-5.0, 5.0, 18.0, 30.0]))
    assert demand[0] > demand[1] > demand[2] and demand[3] > demand[2]
