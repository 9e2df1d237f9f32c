"""Costing energy with effective-dated, time-of-use tariffs.

Inside, money is float64 minor units (pence, cents); at the edge it becomes `Decimal`
rounded half-up to the minor unit, line by line, and the total is the sum of the rounded
lines, so an invoice always adds up.

- Unit rates: each 15-minute interval is costed at the band of the tariff version in
  force at its start, for its local time of day and day type (weekday, weekend, or a
  public holiday of the site's country from `holidays`).
- Standing charge: per local calendar day, from the version in force at its midnight.
- Demand charge: per local calendar month, on the peak interval demand (kW) in the
  range, at the rate of the version in force when the peak happened. For a range that
  covers part of a month, the peak is the one inside the range.
- VAT on the sum of the lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import numba
import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg

from wattline.buckets import site_offset_minutes
from wattline.domain import Resolution
from wattline.tariffs import DAY_TYPES, SLOT_MIN, SLOTS, Band, TariffError, slot_minute, validate_bands

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TariffVersion:
    id: int
    name: str
    currency: str
    valid_from: datetime
    standing_minor_per_day: Decimal
    demand_minor_per_kw: Decimal
    demand_interval_min: int
    vat_rate: Decimal
    bands: tuple[Band, ...]
    export_minor_per_kwh: Decimal = Decimal(0)


def load_tariffs(conn: psycopg.Connection[Any], site_id: int) -> list[TariffVersion]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        versions = cur.execute("SELECT * FROM tariffs WHERE site_id = %s ORDER BY valid_from", (site_id,)).fetchall()
        out = []
        for v in versions:
            bands = cur.execute("SELECT * FROM tariff_bands WHERE tariff_id = %s ORDER BY id", (v["id"],)).fetchall()
            out.append(TariffVersion(
                v["id"], v["name"], v["currency"], v["valid_from"], v["standing_charge_minor_per_day"],
                v["demand_charge_minor_per_kw"], v["demand_interval_minutes"], v["vat_rate"],
                tuple(Band(b["name"], b["rate_minor_per_kwh"], tuple(b["day_types"]), b["start_time"], b["end_time"])
                      for b in bands), v["export_rate_minor_per_kwh"]))
    return out


@dataclass
class RateTable:
    """rates[version, day type, slot] in minor units per kWh; band_of[...] indexes `band_names`."""

    valid_from: F64
    rates: npt.NDArray[np.float64]
    band_of: npt.NDArray[np.int64]
    band_names: list[str]


def rate_table(versions: list[TariffVersion]) -> RateTable:
    names: list[str] = []
    rates = np.zeros((len(versions), len(DAY_TYPES), SLOTS))
    band_of = np.zeros((len(versions), len(DAY_TYPES), SLOTS), dtype=np.int64)
    for v, version in enumerate(versions):
        validate_bands(version.bands)
        for band in version.bands:
            if band.name not in names:
                names.append(band.name)
            start, end = slot_minute(band.start) // SLOT_MIN, (slot_minute(band.end) or 1440) // SLOT_MIN
            for day_type in band.day_types:
                d = DAY_TYPES.index(day_type)
                rates[v, d, start:end] = float(band.rate_minor_per_kwh)
                band_of[v, d, start:end] = names.index(band.name)
    return RateTable(np.array([v.valid_from.timestamp() for v in versions]), rates, band_of, names)


@numba.njit(cache=True, nogil=True)
def _cost_kernel(version: I64, day_type: I64, slot: I64, energy_wh: F64, rates: F64, band_of: I64,
                 n_bands: int) -> tuple[F64, F64, F64]:
    n = energy_wh.shape[0]
    cost = np.zeros(n)
    by_band = np.zeros(n_bands)
    kwh_by_band = np.zeros(n_bands)
    for i in range(n):
        v = version[i]
        if v < 0:
            continue  # before the first tariff version: not costed
        kwh = energy_wh[i] / 1000.0
        c = kwh * rates[v, day_type[i], slot[i]]
        cost[i] = c
        b = band_of[v, day_type[i], slot[i]]
        by_band[b] += c
        kwh_by_band[b] += kwh
    return cost, by_band, kwh_by_band


@dataclass
class LocalCalendar:
    """Local-time features of UTC bucket starts, computed once per site and range."""

    local: pd.DatetimeIndex
    day_type: I64
    slot: I64


def local_calendar(bucket_utc_s: F64, tz: str, country: str, subdivision: str | None = None) -> LocalCalendar:
    local = pd.to_datetime(bucket_utc_s, unit="s", utc=True).tz_convert(tz)
    years = sorted({int(y) for y in local.year.unique()})
    try:
        public = holidays.country_holidays(country, subdiv=subdivision, years=years) if years else {}
    except NotImplementedError:
        public = {}
    holiday_dates = np.array(sorted(public), dtype="datetime64[D]") if public else np.array([], dtype="datetime64[D]")
    local_dates = local.tz_localize(None).values.astype("datetime64[D]")
    is_holiday = np.isin(local_dates, holiday_dates)
    weekend = local.day_of_week.values >= 5
    day_type = np.where(is_holiday, 2, np.where(weekend, 1, 0)).astype(np.int64)
    slot = ((local.hour.values * 60 + local.minute.values) // SLOT_MIN).astype(np.int64)
    return LocalCalendar(local, day_type, slot)


def interval_costs(bucket_utc_s: F64, energy_wh: F64, table: RateTable, cal: LocalCalendar) -> tuple[F64, F64, F64]:
    """Per-interval cost (minor units), and cost and kWh per band."""
    version = np.searchsorted(table.valid_from, bucket_utc_s, side="right").astype(np.int64) - 1
    return _cost_kernel(version, cal.day_type, cal.slot, np.ascontiguousarray(energy_wh, dtype=np.float64),
                        table.rates, table.band_of, len(table.band_names))


def pricing_resolution(versions: list[TariffVersion], tz: str) -> Resolution:
    """The rollup tier a site's energy is priced from, one rate per bucket. Where every band
    edge and version start is on the hour (most tariffs) and the zone's hours are whole, an
    hour has one rate and the hourly tier is exact and four times smaller than the 15-minute one."""
    hourly = (all(b.start.minute == 0 and b.end.minute == 0 for v in versions for b in v.bands)
              and all(v.valid_from.timestamp() % 3600 == 0 for v in versions)
              and site_offset_minutes(tz) % 60 == 0)
    return Resolution.HOUR1 if hourly else Resolution.MIN15


def interval_prices(stamps: F64, versions: list[TariffVersion], tz: str, country: str
                    ) -> tuple[F64, list[str]]:
    """Rate (minor units per kWh) and band name of each interval starting at `stamps`; an
    interval before the first version has rate 0 and band ''."""
    cal = local_calendar(stamps, tz, country)
    table = rate_table(versions)
    version = np.searchsorted(table.valid_from, stamps, side="right").astype(np.int64) - 1
    valid = version >= 0
    v = np.where(valid, version, 0)
    rates = np.where(valid, table.rates[v, cal.day_type, cal.slot], 0.0)
    names = [*table.band_names, ""]
    bands = np.where(valid, table.band_of[v, cal.day_type, cal.slot], len(names) - 1)
    return rates, [names[b] for b in bands]


def money(minor: float | Decimal) -> Decimal:
    """Round minor units half-up to a whole minor unit (a penny, a cent)."""
    return Decimal(str(minor)).quantize(Decimal(1), rounding=ROUND_HALF_UP)


@dataclass
class CostLine:
    label: str
    kind: str  # energy | standing | demand | vat | export (a credit: minor < 0)
    quantity: Decimal  # kWh, days or kW
    minor: Decimal


@dataclass
class Invoice:
    currency: str
    lines: list[CostLine] = field(default_factory=list)
    demand_peaks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_minor(self) -> Decimal:
        return sum((line.minor for line in self.lines), Decimal(0))

    @property
    def total(self) -> Decimal:
        """In major units (pounds, euros)."""
        return self.total_minor / 100


def demand_peaks(bucket_utc_s: F64, energy_wh: F64, interval_min: int, tz: str) -> list[dict[str, Any]]:
    """Per local month: the highest average demand over `interval_min` (from 15-min energy)."""
    if len(bucket_utc_s) == 0:
        return []
    # Demand intervals are aligned on the UTC clock, which is the local clock's quarter and
    # half hours in every zone (offsets are whole quarter hours).
    interval_s = interval_min * 60
    start = np.floor(np.asarray(bucket_utc_s) / interval_s) * interval_s
    starts, inverse = np.unique(start, return_inverse=True)
    kw = np.bincount(inverse, weights=energy_wh) / 1000.0 / (interval_min / 60.0)
    local = pd.DatetimeIndex(pd.to_datetime(starts, unit="s", utc=True)).tz_convert(tz)
    month_key = np.asarray(local.year * 100 + local.month)
    out = []
    for key in np.unique(month_key):
        in_month = np.nonzero(month_key == key)[0]
        peak = in_month[int(np.argmax(kw[in_month]))]
        out.append({"month": f"{key // 100:04d}-{key % 100:02d}", "peak_kw": float(kw[peak]),
                    "at": datetime.fromtimestamp(float(starts[peak]), UTC)})
    return out


def invoice(bucket_utc_s: F64, energy_wh: F64, versions: list[TariffVersion], tz: str, country: str,
            t_from: datetime, t_to: datetime, subdivision: str | None = None, export_wh: F64 | None = None) -> Invoice:
    """Cost of a site's 15-minute energy drawn from the grid over [t_from, t_to); with
    `export_wh` (what it gave to the grid, in the same buckets), a credit at each version's
    export rate, after VAT."""
    if not versions:
        raise TariffError("the site has no tariff")
    currencies = {v.currency for v in versions}
    if len(currencies) > 1:
        raise TariffError(f"tariff versions use several currencies: {sorted(currencies)}")
    table = rate_table(versions)
    cal = local_calendar(bucket_utc_s, tz, country, subdivision)
    _, by_band, kwh_by_band = interval_costs(bucket_utc_s, energy_wh, table, cal)
    inv = Invoice(currencies.pop())
    for b, name in enumerate(table.band_names):
        if kwh_by_band[b] > 0:
            inv.lines.append(CostLine(name, "energy", Decimal(str(round(kwh_by_band[b], 3))), money(by_band[b])))
    # Standing charge per local day that starts inside the range.
    zone = ZoneInfo(tz)
    day = t_from.astimezone(zone).date()
    last = (t_to - timedelta(microseconds=1)).astimezone(zone).date()
    standing = Decimal(0)
    days = 0
    while day <= last:
        midnight = datetime.combine(day, time(0), zone)
        version = _version_at(versions, max(midnight, t_from))
        if version is not None:
            standing += version.standing_minor_per_day
            days += 1
        day += timedelta(days=1)
    if standing:
        inv.lines.append(CostLine("standing charge", "standing", Decimal(days), money(standing)))
    interval = versions[-1].demand_interval_min
    inv.demand_peaks = demand_peaks(bucket_utc_s, energy_wh, interval, tz)
    for peak in inv.demand_peaks:
        version = _version_at(versions, peak["at"])
        if version is not None and version.demand_minor_per_kw:
            kw = Decimal(str(round(peak["peak_kw"], 3)))
            share = month_share(peak["month"], t_from, t_to, zone)
            peak["month_share"] = float(share)
            label = f"demand {peak['month']}"
            if share < 1:
                label += f" (peak of the range, pro-rated: {share * 100:.2f} % of the month)"
            inv.lines.append(CostLine(label, "demand", kw, money(kw * version.demand_minor_per_kw * share)))
    vat_rate = _version_at(versions, t_from) or versions[0]
    if vat_rate.vat_rate:
        inv.lines.append(CostLine("VAT", "vat", vat_rate.vat_rate, money(inv.total_minor * vat_rate.vat_rate)))
    if export_wh is not None and export_wh.sum() > 0:
        starts = np.array([v.valid_from.timestamp() for v in versions])
        which = np.searchsorted(starts, bucket_utc_s, side="right") - 1
        rates = np.array([float(v.export_minor_per_kwh) for v in versions])[np.maximum(which, 0)]
        credit = float(np.sum(np.where(which >= 0, export_wh / 1000.0 * rates, 0.0)))
        if credit > 0:
            kwh = Decimal(str(round(float(export_wh.sum()) / 1000.0, 3)))
            inv.lines.append(CostLine("export", "export", kwh, -money(credit)))
    return inv


def month_share(month: str, t_from: datetime, t_to: datetime, zone: ZoneInfo) -> Decimal:
    """The part of local month `month` ("2026-05") that [t_from, t_to) covers, by elapsed time
    (a range of whole local months: 1). A demand charge is billed on a month's peak; a range
    shorter than the month pays its share of it, so that no 3-hour range carries a whole
    month's charge, and a whole month pays exactly the bill."""
    year, number = int(month[:4]), int(month[5:7])
    start = datetime(year, number, 1, tzinfo=zone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    covered = (min(t_to, end) - max(t_from, start)).total_seconds()
    whole = (end - start).total_seconds()
    if covered >= whole:
        return Decimal(1)
    return (Decimal(max(covered, 0.0)) / Decimal(whole)).quantize(Decimal("0.000001"))


def _version_at(versions: list[TariffVersion], at: datetime) -> TariffVersion | None:
    current = None
    for v in versions:
        if v.valid_from <= at:
            current = v
    return current

