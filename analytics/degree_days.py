"""Degree days, the weather baseline of a site, and what a project saved against it.

- Heating degree days (HDD) of a day: max(0, base − mean temperature); cooling (CDD):
  max(0, mean − base), at the site's own bases.
- The baseline is an ordinary least-squares fit of a site's daily energy against them:
  kWh/day = a + b·HDD + c·CDD. A term whose degree days never vary over the fitted days
  is left out (it cannot be told apart from the intercept): a site that never needed
  cooling gets a + b·HDD.
- Only whole days count: a day with a mean temperature and readings covering at least
  `FULL_DAY` of it. A day with a gap would read as a saving.
- Savings (IPMVP option C, whole facility): for each day of a project's reporting period,
  what the baseline predicts for that day's weather minus what was metered.
- The normalised benchmark compares sites as if every site had had the same weather:
  the mean, day by day, of the temperatures of the sites being compared. Each site's
  energy is moved by its own slopes times the difference in degree days.

Goodness of fit is reported as R² and CV(RMSE) with n − p degrees of freedom (ASHRAE
Guideline 14), so a user can see when a baseline explains little.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import psycopg

from wattline.db import fetch_all
from wattline.errors import Invalid

F64 = npt.NDArray[np.float64]
Conn = psycopg.Connection[Any]
#: A day counts when its readings cover at least this share of it.
FULL_DAY = 0.9
#: A baseline needs at least this many whole days with a temperature.
MIN_DAYS = 14


class NotEnoughData(Invalid):
    """Too few whole days with a temperature to fit a baseline."""

    def __init__(self, days: int, window: tuple[date, date] | None) -> None:
        between = f" from {window[0]} to {window[1]}" if window else ""
        super().__init__("Not enough data", f"a baseline needs {MIN_DAYS} whole days with a mean temperature"
                         f"{between}; there are {days}")
        self.days = days


def degree_days(mean_c: F64, hdd_base_c: float, cdd_base_c: float) -> tuple[F64, F64]:
    """(HDD, CDD) per day."""
    return np.maximum(hdd_base_c - mean_c, 0.0), np.maximum(mean_c - cdd_base_c, 0.0)


@dataclass(frozen=True)
class Baseline:
    """kWh/day = intercept + hdd_slope·HDD + cdd_slope·CDD, fitted on `days` whole days."""

    intercept_kwh: float
    hdd_slope_kwh: float
    cdd_slope_kwh: float
    terms: tuple[str, ...]  # which of "hdd", "cdd" were fitted
    r2: float
    cv_rmse: float
    days: int
    first_day: date
    last_day: date

    def predict(self, hdd: F64, cdd: F64) -> F64:
        return np.asarray(self.intercept_kwh + self.hdd_slope_kwh * hdd + self.cdd_slope_kwh * cdd)


def fit_baseline(day: Sequence[date], hdd: F64, cdd: F64, kwh: F64, *,
                 window: tuple[date, date] | None = None) -> Baseline:
    """Least squares of kWh/day on HDD and CDD (the terms that vary); `window` (first and
    last day looked at) only words the refusal when there are too few days."""
    n = len(kwh)
    if n < MIN_DAYS:
        raise NotEnoughData(n, window or ((day[0], day[-1]) if n else None))
    columns, terms = [np.ones(n)], []
    for name, x in (("hdd", hdd), ("cdd", cdd)):
        if np.ptp(x) > 1e-9:
            columns.append(x)
            terms.append(name)
    design = np.column_stack(columns)
    coef, *_ = np.linalg.lstsq(design, kwh, rcond=None)
    residual = kwh - design @ coef
    ss_res = float(residual @ residual)
    ss_tot = float(((kwh - kwh.mean()) ** 2).sum())
    mean = float(kwh.mean())
    free = n - design.shape[1]
    slopes = dict(zip(terms, coef[1:].tolist(), strict=True))
    return Baseline(intercept_kwh=float(coef[0]), hdd_slope_kwh=slopes.get("hdd", 0.0),
                    cdd_slope_kwh=slopes.get("cdd", 0.0), terms=tuple(terms),
                    r2=1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0,
                    cv_rmse=float(np.sqrt(ss_res / free) / mean) if free > 0 and mean > 0 else float("nan"),
                    days=n, first_day=day[0], last_day=day[-1])


@dataclass
class SiteDays:
    """A site's local days in a range: mean temperature and metered kWh, NaN where missing
    (kWh is NaN for a day whose readings cover less than `FULL_DAY`)."""

    site_id: int
    hdd_base_c: float
    cdd_base_c: float
    day: list[date] = field(default_factory=list)
    mean_c: F64 = field(default_factory=lambda: np.zeros(0))
    energy_kwh: F64 = field(default_factory=lambda: np.zeros(0))

    @property
    def hdd(self) -> F64:
        return degree_days(self.mean_c, self.hdd_base_c, self.cdd_base_c)[0]

    @property
    def cdd(self) -> F64:
        return degree_days(self.mean_c, self.hdd_base_c, self.cdd_base_c)[1]

    @property
    def whole(self) -> npt.NDArray[np.bool_]:
        """Days with both a temperature and a whole day of readings."""
        return np.asarray(np.isfinite(self.mean_c) & np.isfinite(self.energy_kwh))

    def baseline(self) -> Baseline:
        w = self.whole
        return fit_baseline([d for d, k in zip(self.day, w, strict=True) if k], self.hdd[w], self.cdd[w],
                            self.energy_kwh[w], window=(self.day[0], self.day[-1]) if self.day else None)


def site_days(conn: Conn, sites: Sequence[dict[str, Any]], day_from: date, day_to: date) -> dict[int, SiteDays]:
    """For each site (rows with id, timezone, hdd_base_c, cdd_base_c), its local days from
    `day_from` up to, not including, `day_to`: two queries for any number of sites.
    Callers check that the reader may see the sites."""
    if not sites:
        return {}
    ids = [int(s["id"]) for s in sites]
    n = (day_to - day_from).days
    days = [day_from + timedelta(days=i) for i in range(max(n, 0))]
    out = {int(s["id"]): SiteDays(int(s["id"]), float(s["hdd_base_c"]), float(s["cdd_base_c"]), days,
                                  np.full(len(days), np.nan), np.full(len(days), np.nan)) for s in sites}
    if not days:
        return out
    for r in fetch_all(conn, """SELECT site_id, day, mean_c FROM site_temperatures
                                WHERE site_id = ANY(%s) AND day >= %s AND day < %s""", (ids, day_from, day_to)):
        out[r["site_id"]].mean_c[(r["day"] - day_from).days] = r["mean_c"]
    # Daily rollups are bucketed on the site's local midnight; a day either side in UTC
    # covers every zone, and the local date picks the day.
    t_from = datetime.combine(day_from - timedelta(days=1), datetime.min.time(), ZoneInfo("UTC"))
    t_to = datetime.combine(day_to + timedelta(days=1), datetime.min.time(), ZoneInfo("UTC"))
    for r in fetch_all(conn, """
            SELECT n.site_id, (r.bucket AT TIME ZONE s.timezone)::date AS day, r.energy_wh, r.coverage
            FROM nodes n JOIN sites s ON s.id = n.site_id JOIN rollups_1d r ON r.node_id = n.id
            WHERE n.kind = 'site' AND n.site_id = ANY(%s) AND r.bucket >= %s AND r.bucket < %s""",
            (ids, t_from, t_to)):
        i = (r["day"] - day_from).days
        if 0 <= i < n and r["coverage"] >= FULL_DAY:
            out[r["site_id"]].energy_kwh[i] = r["energy_wh"] / 1000.0
    return out


@dataclass(frozen=True)
class Savings:
    """A project's reporting period, day by day, against the baseline fitted before it."""

    baseline: Baseline
    days: SiteDays  # the reporting period
    predicted_kwh: F64  # NaN where the day has no temperature
    metered_kwh: float  # over whole days with a temperature
    expected_kwh: float  # the baseline's prediction for the same days
    counted_days: int
    missing_days: int  # ended days of the period without a temperature or a whole day of readings

    @property
    def savings_kwh(self) -> float:
        return self.expected_kwh - self.metered_kwh


def project_savings(conn: Conn, site: dict[str, Any], project: dict[str, Any], today: date) -> Savings:
    """What the project saved from its start up to, not including, `today` (the site's
    local today: a day counts once it has ended)."""
    start: date = project["starts_on"]
    before = site_days(conn, [site], start - timedelta(days=int(project["baseline_days"])), start)[site["id"]]
    baseline = before.baseline()
    after = site_days(conn, [site], start, max(today, start))[site["id"]]
    predicted = baseline.predict(after.hdd, after.cdd)
    w = after.whole
    return Savings(baseline=baseline, days=after, predicted_kwh=predicted,
                   metered_kwh=float(after.energy_kwh[w].sum()), expected_kwh=float(predicted[w].sum()),
                   counted_days=int(w.sum()), missing_days=int((~w).sum()))


@dataclass(frozen=True)
class Normalised:
    """A site's degree days over a benchmark's days, and what its energy moves by at the
    reference weather."""

    hdd: float
    cdd: float
    adjustment_kwh: float | None  # None: no baseline, or a day of the period without a temperature
    baseline: Baseline | None


def weather_normalised(conn: Conn, sites: Sequence[dict[str, Any]], day_from: date,
                       day_to: date) -> dict[int, Normalised]:
    """For each site, the kWh to add to its energy over [day_from, day_to) to read it as
    if it had had the reference weather: the day-by-day mean temperature of these sites.
    Baselines are fitted on the 365 days up to `day_to`."""
    start = day_to - timedelta(days=365)
    history = site_days(conn, sites, min(start, day_from), day_to)
    period = slice((day_from - min(start, day_from)).days, None)
    fit = slice((start - min(start, day_from)).days, None)
    temps = np.vstack([h.mean_c[period] for h in history.values()]) if history else np.zeros((0, 0))
    known = np.isfinite(temps)
    counted = known.sum(axis=0)
    reference = np.where(counted > 0, np.where(known, temps, 0.0).sum(axis=0) / np.maximum(counted, 1), np.nan)
    out: dict[int, Normalised] = {}
    for site_id, h in history.items():
        hdd, cdd = h.hdd[period], h.cdd[period]
        w = h.whole[fit]
        try:
            baseline: Baseline | None = fit_baseline([d for d, k in zip(h.day[fit], w, strict=True) if k],
                                                     h.hdd[fit][w], h.cdd[fit][w], h.energy_kwh[fit][w])
        except NotEnoughData:
            baseline = None
        adjustment = None
        if baseline is not None and np.isfinite(h.mean_c[period]).all():
            ref_hdd, ref_cdd = degree_days(reference, h.hdd_base_c, h.cdd_base_c)
            adjustment = baseline.hdd_slope_kwh * float((ref_hdd - hdd).sum()) \
                + baseline.cdd_slope_kwh * float((ref_cdd - cdd).sum())
        out[site_id] = Normalised(float(np.nansum(hdd)), float(np.nansum(cdd)), adjustment, baseline)
    return out
