"""Tariff features, each on a hand-worked example."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import numpy as np
import pytest

from analytics.tariffs import TariffVersion, demand_peaks, invoice
from wattline.tariffs import Band, TariffError, validate_bands

ALL = ("weekday", "weekend", "holiday")


def version(bands, *, valid_from=datetime(2020, 1, 1, tzinfo=UTC), standing="0", demand="0", vat="0",
            interval=30, id_=1):
    return TariffVersion(id_, "t", "GBP", valid_from, Decimal(standing), Decimal(demand), interval, Decimal(vat),
                         tuple(bands))


def quarter_hours(start: datetime, hours: float, wh: float = 1000.0):
    n = int(hours * 4)
    ts = np.array([(start + timedelta(minutes=15 * i)).timestamp() for i in range(n)])
    return ts, np.full(n, wh)


def lines(inv):
    return {line.label: line.minor for line in inv.lines}


def test_flat_rate_standing_charge_and_vat():
    start = datetime(2026, 6, 10, tzinfo=UTC)  # a Wednesday, summer time in London
    ts, wh = quarter_hours(start - timedelta(hours=1), 24)  # one local day: 96 kWh
    v = version([Band("flat", Decimal("20"), ALL, time(0), time(0))], standing="50", vat="0.20")
    inv = invoice(ts, wh, [v], "Europe/London", "GB", start - timedelta(hours=1), start + timedelta(hours=23))
    assert lines(inv) == {"flat": Decimal(1920), "standing charge": Decimal(50), "VAT": Decimal(394)}
    assert inv.total == Decimal("23.64")


def test_time_of_use_by_local_time_and_day_type():
    bands = [Band("night", Decimal("10"), ALL, time(0), time(7)),
             Band("day", Decimal("30"), ("weekday",), time(7), time(0)),
             Band("weekend", Decimal("20"), ("weekend", "holiday"), time(7), time(0))]
    v = version(bands)
    # Friday 2026-06-12 and Saturday 2026-06-13, whole local days (BST = UTC+1).
    start = datetime(2026, 6, 11, 23, tzinfo=UTC)
    ts, wh = quarter_hours(start, 48)
    inv = invoice(ts, wh, [v], "Europe/London", "GB", start, start + timedelta(hours=48))
    # Night: 7 h × 2 days × 4 kWh/h = 56 kWh × 10p; day: 17 h × 4 = 68 kWh × 30p; weekend 68 × 20p.
    assert lines(inv) == {"night": Decimal(560), "day": Decimal(2040), "weekend": Decimal(1360)}


def test_public_holiday_rate():
    bands = [Band("weekday", Decimal("30"), ("weekday",), time(0), time(0)),
             Band("off", Decimal("5"), ("weekend", "holiday"), time(0), time(0))]
    start = datetime(2026, 12, 25, tzinfo=UTC)  # Christmas Day, a Friday, GMT
    ts, wh = quarter_hours(start, 24)
    assert lines(invoice(ts, wh, [version(bands)], "Europe/London", "GB", start, start + timedelta(days=1))) == {
        "off": Decimal(480)}
    # The same Friday in a country where it is not a holiday... there is none for 25 Dec in JP.
    assert lines(invoice(ts, wh, [version(bands)], "UTC", "JP", start, start + timedelta(days=1))) == {
        "weekday": Decimal(2880)}


def test_new_version_applies_from_its_start_only():
    old = version([Band("flat", Decimal("10"), ALL, time(0), time(0))], standing="100")
    new = version([Band("flat", Decimal("30"), ALL, time(0), time(0))], standing="200",
                  valid_from=datetime(2026, 6, 10, 12, tzinfo=UTC), id_=2)
    start = datetime(2026, 6, 10, tzinfo=UTC)
    ts, wh = quarter_hours(start, 24)
    inv = invoice(ts, wh, [old, new], "UTC", "GB", start, start + timedelta(days=1))
    # 12 h × 4 kWh at 10p and 12 h × 4 kWh at 30p; the day's standing charge from midnight's version.
    assert lines(inv) == {"flat": Decimal(480 + 1440), "standing charge": Decimal(100)}


def test_demand_charge_on_monthly_peak_half_hour():
    bands = [Band("flat", Decimal("0"), ALL, time(0), time(0))]
    start = datetime(2026, 5, 4, tzinfo=UTC)
    ts, wh = quarter_hours(start, 24, wh=2500.0)  # 10 kW steady
    wh[40] = wh[41] = 50_000.0  # 10:00-10:30: 100 kWh in half an hour = 200 kW
    # The range is the whole month (the only data is on the 4th): the month's bill.
    month = datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    inv = invoice(ts, wh, [version(bands, demand="450")], "UTC", "GB", *month)
    assert inv.demand_peaks[0]["peak_kw"] == pytest.approx(200.0)
    assert inv.demand_peaks[0]["at"] == datetime(2026, 5, 4, 10, tzinfo=UTC)
    assert lines(inv)["demand 2026-05"] == Decimal(90000)


def test_demand_charge_on_part_of_a_month_is_pro_rated_and_says_so():
    """The README's rule: a range shorter than its month pays the range's peak times the
    share of the month it covers; the line says so. A 3-hour range of a 31-day month pays
    3/744 of it, not the whole month's charge."""
    bands = [Band("flat", Decimal("0"), ALL, time(0), time(0))]
    start = datetime(2026, 5, 4, 9, tzinfo=UTC)
    ts, wh = quarter_hours(start, 3, wh=2500.0)
    wh[4] = wh[5] = 50_000.0  # 10:00-10:30: 200 kW
    inv = invoice(ts, wh, [version(bands, demand="450")], "UTC", "GB", start, start + timedelta(hours=3))
    [line] = [x for x in inv.lines if x.kind == "demand"]
    share = Decimal(3 * 3600) / Decimal(31 * 86400)
    assert line.label == "demand 2026-05 (peak of the range, pro-rated: 0.40 % of the month)"
    assert line.quantity == Decimal("200.000")
    assert line.minor == (Decimal(90000) * share).quantize(Decimal(1)) == Decimal(363)
    # In a zone with DST, the share is of the local month's real length (March in London: 743 h).
    zone_start = datetime(2026, 3, 10, tzinfo=UTC)
    ts, wh = quarter_hours(zone_start, 1, wh=2500.0)
    inv = invoice(ts, wh, [version(bands, demand="450")], "Europe/London", "GB", zone_start,
                  zone_start + timedelta(hours=1))
    [line] = [x for x in inv.lines if x.kind == "demand"]
    assert line.minor == (Decimal(10) * 450 * Decimal(1) / Decimal(743)).quantize(Decimal(1))


def test_demand_peaks_per_local_month():
    ts = np.array([datetime(2026, 5, 31, 23, 30, tzinfo=UTC).timestamp(),
                   datetime(2026, 6, 1, 0, 30, tzinfo=UTC).timestamp()])
    peaks = demand_peaks(ts, np.array([1000.0, 500.0]), 15, "Europe/Berlin")  # both in June locally
    assert [p["month"] for p in peaks] == ["2026-06"]


def test_dst_day_bands_follow_local_clock():
    # 2026-03-29, London moves from GMT to BST at 01:00 UTC: a 23-hour local day.
    bands = [Band("night", Decimal("10"), ALL, time(0), time(7)), Band("day", Decimal("30"), ALL, time(7), time(0))]
    start = datetime(2026, 3, 29, 0, tzinfo=UTC)  # local midnight
    end = datetime(2026, 3, 29, 23, tzinfo=UTC)  # next local midnight
    ts, wh = quarter_hours(start, 23)
    inv = invoice(ts, wh, [version(bands, standing="50")], "Europe/London", "GB", start, end)
    # Local 00:00-07:00 is only 6 real hours that day: 24 kWh of night, 17 h = 68 kWh of day.
    assert lines(inv) == {"night": Decimal(240), "day": Decimal(2040), "standing charge": Decimal(50)}


def test_totals_reconcile_to_the_penny():
    rng = np.random.default_rng(3)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ts, _ = quarter_hours(start, 24 * 31)
    wh = rng.uniform(0, 5000, len(ts))
    bands = [Band("night", Decimal("14.5"), ALL, time(0), time(7)),
             Band("day", Decimal("28.62"), ALL, time(7), time(0))]
    inv = invoice(ts, wh, [version(bands, standing="95", demand="450", vat="0.2")], "Europe/London", "GB",
                  start, start + timedelta(days=31))
    assert inv.total_minor == sum(line.minor for line in inv.lines)
    assert all(line.minor == line.minor.to_integral_value() for line in inv.lines)
    energy_minor = sum(line.minor for line in inv.lines if line.kind == "energy")
    exact = sum(wh[i] / 1000 * (14.5 if (datetime.fromtimestamp(t, UTC).hour < 7) else 28.62)
                for i, t in enumerate(ts))
    assert abs(float(energy_minor) - exact) <= len([x for x in inv.lines if x.kind == "energy"]) * 0.5


def test_band_validation():
    with pytest.raises(TariffError, match="no band covers"):
        validate_bands([Band("day", Decimal(1), ALL, time(7), time(0))])
    with pytest.raises(TariffError, match="overlap"):
        validate_bands([Band("a", Decimal(1), ALL, time(0), time(0)), Band("b", Decimal(1), ALL, time(6), time(7))])
    with pytest.raises(TariffError, match="quarter hour"):
        validate_bands([Band("a", Decimal(1), ALL, time(0, 10), time(0))])


def test_export_is_credited_at_the_rate_in_force_after_vat():
    """A site with generation: it pays for what it drew from the grid, VAT on that, and is
    paid for what it gave at each version's export rate, with no VAT on the credit."""
    start = datetime(2026, 6, 10, tzinfo=UTC)
    ts, wh = quarter_hours(start, 24)  # 96 kWh drawn
    exported = np.where(np.arange(len(ts)) < 48, 500.0, 0.0)  # 24 kWh given, all in the first 12 hours
    flat = [Band("flat", Decimal("20"), ALL, time(0), time(0))]
    first = TariffVersion(1, "t", "GBP", datetime(2020, 1, 1, tzinfo=UTC), Decimal(0), Decimal(0), 30,
                          Decimal("0.20"), tuple(flat), Decimal("5"))
    second = TariffVersion(2, "t", "GBP", start + timedelta(hours=6), Decimal(0), Decimal(0), 30, Decimal("0.20"),
                           tuple(flat), Decimal("15"))
    inv = invoice(ts, wh, [first, second], "UTC", "GB", start, start + timedelta(hours=24), export_wh=exported)
    # 12 kWh at 5 and 12 kWh at 15: 240 minor credited; 96 kWh at 20 = 1920, VAT 384 on that alone.
    assert lines(inv) == {"flat": Decimal(1920), "VAT": Decimal(384), "export": Decimal(-240)}
    assert inv.total_minor == Decimal(2064)
    line = next(x for x in inv.lines if x.kind == "export")
    assert line.quantity == Decimal("24.0")
    # Nothing given, or no export rate: no line.
    assert "export" not in lines(invoice(ts, wh, [first], "UTC", "GB", start, start + timedelta(hours=24),
                                         export_wh=np.zeros(len(ts))))
