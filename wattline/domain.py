"""The domain model's vocabulary: enums and the physics of a panel's connection."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from enum import StrEnum


class Connection(StrEnum):
    """How a panel is wired. `nominal_voltage_v` is L-N for single-phase, L-L otherwise."""

    SINGLE_PHASE = "single_phase"
    SPLIT_PHASE = "split_phase"
    THREE_PHASE_WYE = "three_phase_wye"
    THREE_PHASE_DELTA = "three_phase_delta"

    @property
    def conductors(self) -> int:
        """How many phase conductors a circuit of this connection has."""
        return {"single_phase": 1, "split_phase": 2}.get(self.value, 3)

    def conductor_voltage(self, nominal_voltage_v: float) -> float:
        """Voltage that multiplies one conductor's current: P = Σ V_c × I_c × PF."""
        if self is Connection.SINGLE_PHASE:
            return nominal_voltage_v
        if self is Connection.SPLIT_PHASE:
            return nominal_voltage_v / 2.0
        # Balanced three-phase: P = √3 × V_LL × I × PF = Σ_phases (V_LL/√3) × I_phase × PF.
        return nominal_voltage_v / math.sqrt(3.0)


class NodeKind(StrEnum):
    """The kinds of node in a site's electrical tree."""
    SITE = "site"
    PANEL = "panel"
    CIRCUIT = "circuit"
    DEVICE = "device"


class Role(StrEnum):
    """What a user is to the platform; each role has a set of API scopes."""
    RESELLER_ADMIN = "reseller_admin"
    CUSTOMER_ADMIN = "customer_admin"
    FACILITY_MANAGER = "facility_manager"
    INSTALLER = "installer"
    VIEWER = "viewer"


class Resolution(StrEnum):
    """Rollup tiers; the value is the table suffix."""

    MIN1 = "1m"
    MIN15 = "15m"
    HOUR1 = "1h"
    DAY1 = "1d"

    @property
    def minutes(self) -> int:
        """The tier's bucket width in minutes (a day: 1440, though a local day may be 23 or 25 h)."""
        return {"1m": 1, "15m": 15, "1h": 60, "1d": 1440}[self.value]

    @property
    def table(self) -> str:
        """The tier's rollup table."""
        return f"rollups_{self.value}"


def sensor_state(last_seen: datetime | None, current_a: float | None, ct_rating_a: float | None,
                 interval_s: float, now: datetime) -> tuple[str, str]:
    """(state, detail): live, silent (nothing for 3 reporting intervals), implausible (above
    its CT rating) or never_seen. The API's checks and the dashboard's flags both use this."""
    if last_seen is None:
        return "never_seen", "no reading received yet"
    if now - last_seen > timedelta(seconds=3 * interval_s):
        return "silent", f"last reading {int((now - last_seen).total_seconds())} s ago"
    if ct_rating_a is not None and current_a is not None and current_a > 1.2 * ct_rating_a:
        return "implausible", f"{current_a:.1f} A on a {ct_rating_a:g} A clamp"
    return "live", "reporting"
