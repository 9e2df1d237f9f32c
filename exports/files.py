"""What a run delivers: one site's measurements for a period, the customer's virtual meters
for a period, or the customer's catalog.

The measurements are the API's export (PowerRadar's columns, `wattline.export_format`), one
node after another. The catalog is every node of the customer with its id, so that a BI
tool can join measurements (`device_id`) to the hierarchy. File names are fixed by job, site
and period, so a retried delivery writes the same file again, never a second one.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import psycopg

from analytics.degree_days import site_days
from analytics.emissions import co2e_by_node
from analytics.virtual_meters import meter_series
from wattline import export_format, queries, virtual_meters
from wattline.db import fetch_all, fetch_one
from wattline.domain import Resolution
from wattline.principal import acting_for

MEDIA = {"csv": "text/csv", "json": "application/json"}
VIRTUAL_METER_COLUMNS = ("meter_id", "meter_name", "time_utc", "resolution_minutes", "power_w", "energy_wh",
                         "coverage")
DEGREE_DAY_COLUMNS = ("site_id", "site_name", "day", "mean_c", "hdd_base_c", "hdd", "cdd_base_c", "cdd", "energy_kwh")
EMISSION_COLUMNS = ("site_id", "site_name", "node_id", "node_name", "kind", "day", "energy_kwh", "kg_co2e",
                    "unfactored_kwh", "hourly_factor_hours", "annual_g_co2e_per_kwh", "factor_origin", "factor_source")
CATALOG_COLUMNS = ("device_id", "site_id", "site_name", "parent_id", "kind", "name", "external_ref", "path")


@dataclass(frozen=True)
class ExportFile:
    """A file ready to deliver."""

    name: str
    body: bytes
    media_type: str
    rows: int


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "export"


def measurements_file(conn: psycopg.Connection[Any], job: dict[str, Any], site_id: int, start: datetime,
                      end: datetime) -> ExportFile:
    """One site's measurements for [start, end) at the job's resolution, in its format."""
    p = acting_for(job["customer_id"])
    nodes = [n["id"] for n in queries.tree(conn, p, site_id)
             if not job["node_ids"] or n["id"] in job["node_ids"]]
    count = 0

    def batches() -> Iterator[queries.MeasurementBatch]:
        nonlocal count
        for batch in queries.measurement_batches(conn, p, nodes, Resolution(job["resolution"]), start, end):
            count += len(batch)
            yield batch

    body = export_format.body(batches(), job["format"])
    name = f"{_slug(job['name'])}_site-{site_id}_{start:%Y-%m-%d}_{job['resolution']}.{job['format']}"
    return ExportFile(name, body, MEDIA[job["format"]], count)


def virtual_meters_file(conn: psycopg.Connection[Any], job: dict[str, Any], start: datetime,
                        end: datetime) -> ExportFile:
    """Every virtual meter of the customer for [start, end) at the job's resolution, in its
    format: a meter per run of rows, each bucket its nodes have (`analytics.virtual_meters`)."""
    p = acting_for(job["customer_id"])
    resolution = Resolution(job["resolution"])
    rows: list[dict[str, Any]] = []
    for meter in virtual_meters.meters(conn, p, job["customer_id"]):
        series = meter_series(conn, p, meter["id"], resolution, start, end)
        if series is None:
            continue
        for bucket, power, energy, coverage in zip(series.bucket_s.tolist(), series.mean_power_w.tolist(),
                                                   series.energy_wh.tolist(), series.coverage.tolist(), strict=True):
            rows.append({"meter_id": meter["id"], "meter_name": meter["name"],
                         "time_utc": f"{datetime.fromtimestamp(bucket, UTC):%Y-%m-%dT%H:%M:%S}Z",
                         "resolution_minutes": resolution.minutes, "power_w": power, "energy_wh": energy,
                         "coverage": coverage})
    name = f"{_slug(job['name'])}_virtual-meters_{start:%Y-%m-%d}_{job['resolution']}.{job['format']}"
    return ExportFile(name, _body(rows, VIRTUAL_METER_COLUMNS, job["format"]), MEDIA[job["format"]], len(rows))


def degree_days_file(conn: psycopg.Connection[Any], job: dict[str, Any], site_id: int, start: datetime,
                     end: datetime) -> ExportFile:
    """One site's local days that begin in [start, end): mean temperature, degree days at
    the site's bases, and the day's energy (empty where unknown), as stored when the run is built."""
    site = fetch_one(conn, "SELECT id, name, timezone, hdd_base_c, cdd_base_c FROM sites WHERE id = %s", (site_id,))
    rows: list[dict[str, Any]] = []
    if site is not None:
        zone = ZoneInfo(site["timezone"])

        def first_day_from(t: datetime) -> date:  # the first local midnight at or after t
            local = t.astimezone(zone)
            return local.date() if local.time() == dt_time(0) else local.date() + timedelta(days=1)

        days = site_days(conn, [site], first_day_from(start), first_day_from(end))[site_id]
        for day, t, hdd, cdd, kwh in zip(days.day, days.mean_c.tolist(), days.hdd.tolist(), days.cdd.tolist(),
                                         days.energy_kwh.tolist(), strict=True):
            if math.isnan(t) and math.isnan(kwh):
                continue
            rows.append({"site_id": site_id, "site_name": site["name"], "day": day.isoformat(),
                         "mean_c": _known(t), "hdd_base_c": site["hdd_base_c"], "hdd": _known(hdd),
                         "cdd_base_c": site["cdd_base_c"], "cdd": _known(cdd), "energy_kwh": _known(kwh)})
    name = f"{_slug(job['name'])}_site-{site_id}_degree-days_{start:%Y-%m-%d}.{job['format']}"
    return ExportFile(name, _body(rows, DEGREE_DAY_COLUMNS, job["format"]), MEDIA[job["format"]], len(rows))


def emissions_file(conn: psycopg.Connection[Any], job: dict[str, Any], site_id: int, start: datetime,
                   end: datetime) -> ExportFile:
    """One site's CO2e per node and local day in [start, end) (taken in whole hours), with
    the annual factor and where it comes from (`analytics.emissions`)."""
    p = acting_for(job["customer_id"])
    site = queries.site(conn, p, site_id)
    rows: list[dict[str, Any]] = []
    if site is not None:
        lo, hi = (t.replace(minute=0, second=0, microsecond=0) for t in (start, end))
        factor, found = co2e_by_node(conn, p, site, lo, hi, "day")
        rows = [{"site_id": site_id, "site_name": site["name"], "node_id": n.node_id, "node_name": n.name,
                 "kind": n.kind, "day": n.period.isoformat() if n.period else None, "energy_kwh": n.energy_kwh,
                 "kg_co2e": n.kg_co2e, "unfactored_kwh": n.unfactored_kwh, "hourly_factor_hours": n.hourly_hours,
                 "annual_g_co2e_per_kwh": factor.g_per_kwh, "factor_origin": factor.origin,
                 "factor_source": factor.source} for n in found]
    name = f"{_slug(job['name'])}_site-{site_id}_co2e_{start:%Y-%m-%d}.{job['format']}"
    return ExportFile(name, _body(rows, EMISSION_COLUMNS, job["format"]), MEDIA[job["format"]], len(rows))


def _known(x: float) -> float | None:
    return None if math.isnan(x) else x


def _body(rows: list[dict[str, Any]], columns: tuple[str, ...], fmt: str) -> bytes:
    """Small files' rows as JSON (null for unknown) or CSV (empty for unknown)."""
    if fmt == "json":
        return orjson.dumps(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns)
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return buf.getvalue().encode()


def catalog_file(conn: psycopg.Connection[Any], job: dict[str, Any], start: datetime) -> ExportFile:
    """Every node of the customer, with its id and path, as CSV."""
    nodes = fetch_all(conn, """
        WITH RECURSIVE walk AS (
            SELECT n.id, n.site_id, n.parent_id, n.kind, n.name, n.external_ref, n.name::text AS path
            FROM nodes n JOIN sites s ON s.id = n.site_id WHERE s.customer_id = %s AND n.parent_id IS NULL
            UNION ALL
            SELECT n.id, n.site_id, n.parent_id, n.kind, n.name, n.external_ref, walk.path || ' › ' || n.name
            FROM nodes n JOIN walk ON n.parent_id = walk.id)
        SELECT w.id AS device_id, w.site_id, s.name AS site_name, w.parent_id, w.kind, w.name, w.external_ref, w.path
        FROM walk w JOIN sites s ON s.id = w.site_id ORDER BY w.site_id, w.path""", (job["customer_id"],))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CATALOG_COLUMNS)
    for n in nodes:
        writer.writerow(["" if n[c] is None else n[c] for c in CATALOG_COLUMNS])
    return ExportFile(f"{_slug(job['name'])}_catalog_{start:%Y-%m-%d}.csv", buf.getvalue().encode(), "text/csv",
                      len(nodes))
