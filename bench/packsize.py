"""`python -m bench packsize`: ingest at a real fleet's pack sizes (#21).

Real bridges carry tens of sensors, not 500. For 10, 50 and 500 readings a pack (the same
100,000 sensors, so 10,000, 2,000 and 200 bridges), each on its own fresh stack: Mosquitto
alone (a null QoS-1 subscriber) in packs/s, then rounds of the raw COPY ceiling, one
gateway, and two gateways in a shared group (the scale-out step of docs/scaling.md), each
draining the same backlog end to end, rollups off as in `bench ingest`. A ratio is the
median of the rounds' ratios, each against the COPY ceiling measured in the same round:
this shared machine moves absolute rates by ±40 % between minutes."""

from __future__ import annotations

from bench.common import Row, median, services
from bench.ingest import SENSORS, T0, copy_ceiling, drain_shared, empty, mosquitto_ceiling, packs, seed

SIZES = (10, 50, 500)
TICKS = 10  # a million readings a round
ROUNDS = 3
TARGETS = {10: "target ≥ 100,000 readings/s", 50: "target ≥ 70 % of COPY", 500: "target ≥ 80 % of COPY"}


def run() -> list[Row]:
    from launcher.localstack import free_port

    rows: list[Row] = []
    readings = SENSORS * TICKS
    for size in SIZES:
        with services() as stack:
            seed(stack, size)
            items = packs(TICKS, T0, size)
            mosq = mosquitto_ceiling(stack, items, readings)
            ports = [free_port(), free_port()]
            copies, one, two = [], [], []
            for _ in range(ROUNDS):
                copies.append(copy_ceiling(stack, readings))
                # One member, then two; drain_shared has a member beyond the count leave first.
                one.append(drain_shared(stack, 1, ports, items, readings)[0])
                two.append(drain_shared(stack, 2, ports, items, readings)[0])
                empty(stack)  # the next round's COPY ceiling into an empty table
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
