"""Scale-out: 1, 2 and 3 gateway processes on one MQTT v5 shared subscription drain the same
backlog. Throughput per count, beside the single gateway of the same run, and proof that
no pack was handled twice (the gateways' stored counts add up exactly, no duplicates)."""

from __future__ import annotations

from bench.common import Row, services
from bench.ingest import SENSORS, T0, drain_shared, packs, seed

TICKS = 10  # 1 M readings per round


def run() -> list[Row]:
    from launcher.localstack import free_port

    rows: list[Row] = []
    with services() as stack:
        seed(stack)
        ports = [free_port() for _ in range(3)]
        base = 0.0
        for round_no, n in enumerate((1, 2, 3, 1)):
            rate, stored, duplicates = drain_shared(stack, n, ports, packs(TICKS, T0 + round_no * 1000.0),
                                                    SENSORS * TICKS)
            label = f"{n} gateway{'s' if n > 1 else ''}" + (" (again, for drift)" if round_no == 3 else "")
            base = base or rate
            rows += [Row("scale-out", f"{label}: MQTT → committed rows", rate, "readings/s",
                         f"{rate / base:.2f}× one gateway; stored {stored:,} of {SENSORS * TICKS:,}, "
                         f"{duplicates} handled twice")]
    return rows
