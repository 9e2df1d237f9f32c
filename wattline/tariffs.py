"""Tariff versions: the vocabulary, the rule that bands tile every day, and the write.

A version is effective-dated and frozen once in effect (a trigger in `sql/008`): a change
is a new version, so history is never re-priced silently. Costing lives in
`analytics.tariffs`; this module is what the API, the dashboard and the seeders share.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg

from wattline import audit
from wattline.db import fetch_all, fetch_one
from wattline.errors import Invalid
from wattline.principal import Principal

SLOT_MIN = 15
SLOTS = 24 * 60 // SLOT_MIN
DAY_TYPES = ("weekday", "weekend", "holiday")


class TariffError(Invalid):
    """A tariff that cannot be stored or used as given; the message says why."""

    def __init__(self, detail: str) -> None:
        """`detail` is the sentence shown to the user."""
        super().__init__("Invalid tariff", detail)


@dataclass(frozen=True)
class Band:
    """A unit rate for some day types between two local times (end 00:00 means midnight)."""

    name: str
    rate_minor_per_kwh: Decimal
    day_types: tuple[str, ...]
    start: time
    end: time


def slot_minute(t: time) -> int:
    """Minutes since local midnight."""
    return t.hour * 60 + t.minute


def validate_bands(bands: list[Band] | tuple[Band, ...]) -> None:
    """Bands must cover every 15-minute slot of every day type exactly once."""
    for day_type in DAY_TYPES:
        cover = np.zeros(SLOTS, dtype=int)
        for band in bands:
            if day_type not in band.day_types:
                continue
            start, end = slot_minute(band.start), slot_minute(band.end) or 1440
            if start % SLOT_MIN or end % SLOT_MIN:
                raise TariffError(f"band {band.name!r} must start and end on a quarter hour")
            if end <= start:
                raise TariffError(f"band {band.name!r} ends before it starts")
            cover[start // SLOT_MIN:end // SLOT_MIN] += 1
        if (cover == 0).any():
            gap = int(np.argmax(cover == 0)) * SLOT_MIN
            raise TariffError(f"no band covers {day_type} {gap // 60:02d}:{gap % 60:02d}")
        if (cover > 1).any():
            clash = int(np.argmax(cover > 1)) * SLOT_MIN
            raise TariffError(f"bands overlap on {day_type} at {clash // 60:02d}:{clash % 60:02d}")


def add_tariff(conn: psycopg.Connection[Any], site_id: int, name: str, currency: str, valid_from: datetime,
               bands: list[Band] | tuple[Band, ...], *, standing_charge_minor_per_day: Decimal = Decimal(0),
               demand_charge_minor_per_kw: Decimal = Decimal(0), demand_interval_minutes: int = 30,
               vat_rate: Decimal = Decimal(0), actor: Principal | None = None) -> int:
    """Add a tariff version to a site (idempotent per `valid_from`); bands are validated first.

    The days it can re-price are un-marked in the cost tier by a trigger, so the rollup
    worker re-prices them. Returns the version's id.
    """
    validate_bands(bands)
    with conn.transaction():
        existing = fetch_one(conn, "SELECT id FROM tariffs WHERE site_id = %s AND valid_from = %s",
                             (site_id, valid_from))
        if existing is not None:
            return int(existing["id"])
        row = fetch_one(conn, """
            INSERT INTO tariffs (site_id, name, currency, valid_from, standing_charge_minor_per_day,
                                 demand_charge_minor_per_kw, demand_interval_minutes, vat_rate)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                        (site_id, name, currency, valid_from, standing_charge_minor_per_day,
                         demand_charge_minor_per_kw, demand_interval_minutes, vat_rate))
        assert row is not None
        tariff_id = int(row["id"])
        with conn.cursor() as cur:
            cur.executemany("""INSERT INTO tariff_bands (tariff_id, name, rate_minor_per_kwh, day_types, start_time,
                                                         end_time) VALUES (%s, %s, %s, %s, %s, %s)""",
                            [(tariff_id, b.name, b.rate_minor_per_kwh, list(b.day_types), b.start, b.end)
                             for b in bands])
        audit.record(conn, actor, "create", "tariff", tariff_id, site_id=site_id, valid_from=valid_from.isoformat())
    return tariff_id


def tariff_versions(conn: psycopg.Connection[Any], site_id: int) -> list[dict[str, Any]]:
    """A site's tariff versions, newest first, each with its bands."""
    versions = fetch_all(conn, """SELECT id, name, currency, valid_from, standing_charge_minor_per_day,
                                         demand_charge_minor_per_kw, demand_interval_minutes, vat_rate
                                  FROM tariffs WHERE site_id = %s ORDER BY valid_from DESC""", (site_id,))
    for t in versions:
        t["bands"] = fetch_all(conn, """SELECT name, rate_minor_per_kwh, day_types, start_time AS start,
                                               end_time AS end
                                        FROM tariff_bands WHERE tariff_id = %s ORDER BY id""", (t["id"],))
    return versions
