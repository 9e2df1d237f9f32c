"""Scale-out: 1, 2 and 3 gateway processes on one MQTT v5 shared subscription drain the same
backlog. Throughput per count, beside the single gateway of the same run, and proof that
no pack was handled twice (the gateways' stored counts add up exactly, no duplicates)."""

from __future__ import annotations

import time
from typing import Any

from bench.common import Row, services
from bench.ingest import (
    SENSORS,
    T0,
    drain_seconds,
    empty,
    gateway_health,
    leave,
    packs,
    seed,
    start_on_backlog,
    stop_all,
)

TICKS = 10  # 1 M readings per round


def drain(stack: Any, n: int, round_no: int, ports: list[int]) -> tuple[float, int, int]:
    empty(stack)
    # Scaling down: members of the group beyond n leave it, or the broker would keep routing
    # them a share of the backlog that nobody takes (their sessions outlive their processes).
    for i in range(n, len(ports)):
        leave(stack, ports[i], i)
    readings = SENSORS * TICKS
    gateways = start_on_backlog(stack, ports[:n], packs(TICKS, T0 + round_no * 1000.0))
    elapsed = drain_seconds(stack, ports[:n], readings)
    time.sleep(0.5)
    shares = [gateway_health(port) for port in ports[:n]]
    stop_all(gateways)
    return readings / elapsed, sum(h["stored"] for h in shares), sum(h["duplicates"] for h in shares)


def run() -> list[Row]:
    from wattline.localstack import free_port

    rows: list[Row] = []
    with services() as stack:
        seed(stack)
        ports = [free_port() for _ in range(3)]
        base = 0.0
        for round_no, n in enumerate((1, 2, 3, 1)):
            rate, stored, duplicates = drain(stack, n, round_no, ports)
            label = f"{n} gateway{'s' if n > 1 else ''}" + (" (again, for drift)" if round_no == 3 else "")
            base = base or rate
            rows += [Row("scale-out", f"{label}: MQTT → committed rows", rate, "readings/s",
                         f"{rate / base:.2f}× one gateway; stored {stored:,} of {SENSORS * TICKS:,}, "
                         f"{duplicates} handled twice")]
    return rows
