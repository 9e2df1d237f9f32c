"""`python -m bench packsize`: ingest at a real fleet's pack sizes (#21).

Real bridges carry tens of sensors, not 500. For 10, 50 and 500 readings a pack (the same
100,000 sensors, so 10,000, 2,000 and 200 bridges), each on its own fresh stack: Mosquitto
alone (a null QoS-1 subscriber) in packs/s, then rounds of the raw COPY ceiling, one
gateway, and two gateways in a shared group (the scale-out step of docs/scaling.md), each
draining the same backlog end to end, rollups off as in `bench ingest`. A ratio is the
median of the rounds' ratios, each against the COPY ceiling measured in the same round:
this shared machine moves absolute rates by ±40 % between minutes."""

from __future__ import annotations

from bench.common import Row, Stack, median, services
from bench.ingest import (
    SENSORS,
    T0,
    copy_ceiling,
    drain_seconds,
    empty,
    leave,
    mosquitto_ceiling,
    packs,
    seed,
    start_on_backlog,
    stop_all,
)

SIZES = (10, 50, 500)
TICKS = 10  # a million readings a round
ROUNDS = 3
TARGETS = {10: "target ≥ 100,000 readings/s", 50: "target ≥ 70 % of COPY", 500: "target ≥ 80 % of COPY"}


def drain(stack: Stack, items: list[tuple[str, bytes]], readings: int, gateways: int) -> float:
    """Readings/s for `gateways` gateways (one shared group) draining `items` from the broker."""
    from launcher.localstack import free_port

    ports = [free_port() for _ in range(gateways)]
    started = start_on_backlog(stack, ports, items)
    try:
        return readings / drain_seconds(stack, ports, readings)
    finally:
        stop_all(started)
        # The second member leaves the group, or the broker would route it half of the next
        # round's backlog, queued in a session nobody reads.
        for n in range(1, gateways):
            leave(stack, free_port(), n)
        empty(stack)


def run() -> list[Row]:
    rows: list[Row] = []
    readings = SENSORS * TICKS
    for size in SIZES:
        with services() as stack:
            seed(stack, size)
            items = packs(TICKS, T0, size)
            mosq = mosquitto_ceiling(stack, items, readings)
            copies, one, two = [], [], []
            for _ in range(ROUNDS):
                copies.append(copy_ceiling(stack, readings))
                one.append(drain(stack, items, readings, 1))
                two.append(drain(stack, items, readings, 2))
            label = f"{size} a pack"
            note = f"median of {ROUNDS} rounds' ratios"
            rows += [
                Row("pack size", f"Mosquitto alone, {label}", mosq / size, "packs/s", f"{len(items):,} packs"),
                Row("pack size", f"COPY ceiling, {label}'s run", median(copies), "readings/s", f"median of {ROUNDS}"),
                Row("pack size", f"end to end, one gateway, {label}", median(one), "readings/s", TARGETS[size]),
                Row("pack size", f"end to end / COPY, one gateway, {label}",
                    median([100 * r / c for r, c in zip(one, copies, strict=True)]), "%", note),
                Row("pack size", f"end to end, two gateways, {label}", median(two), "readings/s", "one shared group"),
                Row("pack size", f"end to end / COPY, two gateways, {label}",
                    median([100 * r / c for r, c in zip(two, copies, strict=True)]), "%", note),
                Row("pack size", f"end to end / Mosquitto, one gateway, {label}", 100 * median(one) / mosq, "%",
                    "same stack"),
            ]
    return rows
