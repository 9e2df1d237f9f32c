"""A node's electrical parameters: the one rule every reader and the rollup worker use.

Each of nominal voltage, power factor and connection is the node's own value if it has
one, else that of the nearest node above it that sets it (a circuit takes its panel's, a
device its circuit's panel's, a sub-panel its own). Where nothing up the tree sets one,
the physics falls back to 230 V, PF 1, single-phase, and an export shows the value as
unknown. A reading's measured voltage or power factor still overrides these (see
`analytics.rollup.readings_power`).

The walk up the tree is the SQL function `node_electrics` (`sql/012_one_rule.sql`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from wattline.domain import Connection

DEFAULT_VOLTAGE_V = 230.0
DEFAULT_POWER_FACTOR = 1.0
DEFAULT_CONNECTION = Connection.SINGLE_PHASE


@dataclass(frozen=True)
class Electrical:
    """What the tree configures for a node; None where nothing up the tree sets it."""

    nominal_voltage_v: float | None = None
    power_factor: float | None = None
    connection: Connection | None = None

    @property
    def conductor_voltage_v(self) -> float:
        """The voltage that multiplies one conductor's current, defaults applied."""
        return (self.connection or DEFAULT_CONNECTION).conductor_voltage(
            DEFAULT_VOLTAGE_V if self.nominal_voltage_v is None else self.nominal_voltage_v)

    @property
    def effective_power_factor(self) -> float:
        """The power factor used for power, defaults applied."""
        return DEFAULT_POWER_FACTOR if self.power_factor is None else self.power_factor

    @property
    def configured_conductor_voltage_v(self) -> float | None:
        """The conductor voltage the tree configures, or None (what an export shows)."""
        if self.nominal_voltage_v is None or self.connection is None:
            return None
        return self.connection.conductor_voltage(self.nominal_voltage_v)


UNCONFIGURED = Electrical()


def electrical(conn: psycopg.Connection[Any], node_ids: Sequence[int]) -> dict[int, Electrical]:
    """The electrical parameters of each node in `node_ids` (missing nodes are left out)."""
    if not node_ids:
        return {}
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute("SELECT node_id, nominal_voltage_v, power_factor, connection FROM node_electrics(%s)",
                           (list(node_ids),)).fetchall()
    return {int(node): Electrical(None if volts is None else float(volts), None if pf is None else float(pf),
                                  Connection(conn_type) if conn_type else None)
            for node, volts, pf, conn_type in rows}
