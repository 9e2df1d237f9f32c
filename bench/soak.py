"""Soak: the simulator's wire traffic published in real time for 10 minutes (set
WATTLINE_SOAK_SECONDS to change) into one gateway; its RSS and how far the stored rows trail
the published ones, sampled every 10 s. Flat memory and a bounded lag are the pass marks."""

from __future__ import annotations

import os
import time

import numpy as np
import paho.mqtt.client as mqtt
import psutil

from bench.common import Row, services
from bench.ingest import (
    PER_BRIDGE,
    SENSORS,
    bridges,
    client,
    count,
    seed,
    start_gateway,
    stored_by,
    wait_healthy,
)
from ingest.gateway import READ_CHUNK
from wattline.senml import SENML_TOPIC, encode_pack
from wattline.settings import Settings


def run() -> list[Row]:
    from launcher.localstack import free_port

    seconds = float(os.environ.get("WATTLINE_SOAK_SECONDS", "600"))
    rate = float(os.environ.get("WATTLINE_SOAK_RATE", "105000"))  # the 100k target, 5 % over
    rows: list[Row] = []
    with services() as stack:
        seed(stack)
        port = free_port()
        gw = start_gateway(stack, port)
        wait_healthy(port)
        proc = psutil.Process(gw.pid)
        pub = client(stack.publisher_url, "bench-soak", clean=True)
        pub.loop_start()
        rng = np.random.default_rng(4)
        # Relative time (bt 0: "at receipt", RFC 8428 §4.5.3), so each bridge's pack is encoded
        # once and the publisher on this same 2-core machine costs little: the soak measures
        # the gateway and the database, not the simulated bridges' JSON encoder.
        wire = [(SENML_TOPIC.format(bridge=bridge),
                 encode_pack(list(zip(serials, [0.0] * PER_BRIDGE, np.round(rng.uniform(0, 60, PER_BRIDGE), 3).tolist(),
                                      strict=True))))
                for bridge, serials in bridges()]
        interval = SENSORS / rate  # every sensor reports once per interval
        began = time.time()
        next_t = began // 1 + 1
        published = 0
        last: list[mqtt.MQTTMessageInfo] = []
        samples: list[tuple[float, float, int, int]] = []  # (elapsed, rss MiB, published, stored)
        next_sample = began + 10
        while time.time() - began < seconds:
            time.sleep(max(0.0, next_t - time.time()))
            last = [pub.publish(topic, payload, qos=1) for topic, payload in wire]
            published += SENSORS
            next_t += interval
            if time.time() >= next_sample:
                # The gateway's own counter: a count(*) of tens of millions of rows every 10 s
                # would load the database more than the ingest does.
                samples.append((time.time() - began, proc.memory_info().rss / 2**20, published, stored_by([port])))
                next_sample += 10
        for info in last:  # in order: the last tick's acks mean everything before is in the broker
            info.wait_for_publish(300)
        publishing_s = time.time() - began
        pub.loop_stop()
        pub.disconnect()
        settle_started = time.time()
        while stored_by([port]) < published and time.time() - settle_started < 600:
            time.sleep(0.5)
        drained_in = time.time() - settle_started
        stored = count(stack)
        gw.terminate()
        gw.wait(30)
    rss = [s[1] for s in samples]
    lag = [(s[2] - s[3]) / rate for s in samples]
    tenth = max(1, len(samples) // 10)
    early, late = float(np.median(rss[tenth:2 * tenth])), float(np.median(rss[-tenth:]))
    # Sustained: everything published, stored, over the publishing time plus the final drain.
    achieved = stored / (publishing_s + drained_in)
    # The gateway holds at most receive_maximum packs or max_unacked_bytes of them, and up to
    # a read chunk more (ingest/gateway.py): its RSS may step up once by that buffer's
    # high-water mark; anything beyond that is growth.
    s = Settings()
    allowance = (min(s.receive_maximum * len(wire[0][1]), s.max_unacked_bytes) + READ_CHUNK) / 2**20
    rows += [
        Row("soak", f"{seconds / 60:.0f} min, {rate:,.0f} readings/s asked: published", published / publishing_s,
            "readings/s", f"{published:,} readings, pre-encoded packs of {PER_BRIDGE}"),
        Row("soak", "stored, sustained (publishing time + final drain)", achieved, "readings/s",
            "target ≥ 100,000 sustained"),
        Row("soak", "gateway RSS, second tenth of the run (median)", early, "MiB"),
        Row("soak", "gateway RSS, last tenth of the run (median)", late, "MiB",
            f"growth {late - early:+.0f} MiB; flat: within the {allowance:.0f} MiB pack buffer; by tenth: "
            + " ".join(f"{float(np.median(rss[i:i + tenth])):.0f}" for i in range(0, len(rss), tenth))),
        Row("soak", "stored rows behind published, at the end", lag[-1] if lag else 0.0, "s of traffic",
            (f"max {max(lag):.1f} s; by tenth: " + " ".join(f"{lag[min(i + tenth, len(lag)) - 1]:.0f}"
                                                             for i in range(0, len(lag), tenth))) if lag else ""),
        Row("soak", "every published reading stored, drained after publishing stopped", drained_in, "s",
            f"{stored:,} of {published:,} stored"),
    ]
    return rows
