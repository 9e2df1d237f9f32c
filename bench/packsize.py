"""`python -m bench packsize`: ingest at a real fleet's pack sizes (#21's first measurement).

Real bridges carry tens of sensors, not 500. For 10, 50 and 500 readings a pack (the same
100,000 sensors, so 10,000, 2,000 and 200 bridges), each on its own fresh stack: the raw
COPY ceiling, Mosquitto alone (a null QoS-1 subscriber) in packs/s, and the gateway end to
end, rollups off as in `bench ingest`. The ratios to quote are each size's gateway against
the COPY ceiling of the same stack."""

from __future__ import annotations

from bench.common import Row, median, services
from bench.ingest import SENSORS, T0, copy_ceiling, empty, gateway_throughput, mosquitto_ceiling, packs, seed

SIZES = (10, 50, 500)
TICKS = 10  # a million readings a round
ROUNDS = 2
TARGETS = {10: "target ≥ 100,000 readings/s", 50: "target ≥ 70 % of COPY", 500: "target ≥ 80 % of COPY"}


def run() -> list[Row]:
    from launcher.localstack import free_port

    rows: list[Row] = []
    readings = SENSORS * TICKS
    for size in SIZES:
        with services() as stack:
            seed(stack, size)
            items = packs(TICKS, T0, size)
            port = free_port()
            mosq = mosquitto_ceiling(stack, items, readings)
            copies, rates = [], []
            for _ in range(ROUNDS):
                copies.append(copy_ceiling(stack, readings))
                rates.append(gateway_throughput(stack, items, readings, port)[0])
                empty(stack)
            copy, rate = median(copies), median(rates)
            label = f"{size} a pack"
            rows += [
                Row("pack size", f"Mosquitto alone, {label}", mosq / size, "packs/s", f"{len(items):,} packs"),
                Row("pack size", f"COPY ceiling, {label}'s run", copy, "readings/s", f"median of {ROUNDS}"),
                Row("pack size", f"end to end, {label}", rate, "readings/s", TARGETS[size]),
                Row("pack size", f"end to end / COPY, {label}", 100 * rate / copy, "%", "same stack"),
                Row("pack size", f"end to end / Mosquitto, {label}", 100 * rate / mosq, "%", "same stack"),
            ]
    return rows
