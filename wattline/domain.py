"""The domain model's vocabulary: enums and the physics of a panel's connection."""

from __future__ import annotations

import math
from enum import StrEnum


class Connection(StrEnum):
    """How a panel is wired. `nominal_voltage_v` is L-N for single-phase, L-L otherwise."""

    SINGLE_PHASE = "single_phase"
    SPLIT_PHASE = "split_phase"
    THREE_PHASE_WYE = "three_phase_wye"
    THREE_PHASE_DELTA = "three_phase_delta"

    @property
    def conductors(self) -> int:
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
    SITE = "site"
    PANEL = "panel"
    CIRCUIT = "circuit"
    DEVICE = "device"


class Role(StrEnum):
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
        return {"1m": 1, "15m": 15, "1h": 60, "1d": 1440}[self.value]

    @property
    def table(self) -> str:
        return f"rollups_{self.value}"
