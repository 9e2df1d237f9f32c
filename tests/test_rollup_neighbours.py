"""A real-time minute re-computes the minute before it only when one of its readings may
have come after that minute was read: the gateway's `left_pad` (ingest.writer), the
worker's per-(shard, minute) read marks (wattline.rollup_queue), and the result equal to a
full re-computation either way."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from analytics.worker import RollupEngine
from ingest.packs import RawPack
from ingest.writer import BatchWriter
from tests.factories import GAP, one_circuit_site, snapshot
from wattline.rollup_queue import read_minutes
from wattline.senml import SENML_TOPIC, encode_pack


def store(database_url: str, times: list[float], writer: BatchWriter | None = None) -> None:
    """CT-1's readings at `times`, one pack each, through a gateway's writer (a fresh one,
    which knows nothing stored before, unless one is given)."""
    own = writer is None
    w = writer or BatchWriter(database_url, rollup_settle_s=15.0, rollup_gap_s=GAP)
    try:
        for t in times:
            w.write([RawPack(SENML_TOPIC.format(bridge="BR-1"), encode_pack([("CT-1", t, 10.0 + t % 7)]),
                             time.time())])
    finally:
        if own:
            w.close()


def pads(db: psycopg.Connection[Any]) -> dict[float, list[bool]]:
    """Each queued minute's rows' `left_pad`, in the order queued; the queue is then emptied."""
    out: dict[float, list[bool]] = {}
    for minute, pad in db.execute("SELECT extract(epoch FROM ts_from)::float8, left_pad FROM rollup_dirty ORDER BY id"):
        out.setdefault(minute, []).append(pad)
    db.execute("DELETE FROM rollup_dirty")
    return out


def test_the_gateway_marks_only_first_readings_that_a_pass_may_have_missed(db: psycopg.Connection[Any],
                                                                            database_url: str) -> None:
    site = one_circuit_site(db).site_id
    shard = site % 16
    m = time.time() // 60 * 60 - 600
    store(database_url, [m - 55, m - 45, m - 35, m - 25, m - 15, m - 5])
    pads(db)
    # Nobody has read the minute before: even a first reading changes nothing already computed.
    store(database_url, [m + 3])
    assert pads(db) == {m: [False]}
    # A pass reads the minute before (and commits).
    with db.transaction():
        read_minutes(db, [(shard, m - 60)])
    writer = BatchWriter(database_url, rollup_settle_s=15.0, rollup_gap_s=GAP)
    try:
        store(database_url, [m + 1], writer)  # earlier than m + 3: now the sensor's first of the minute
        store(database_url, [m + 13], writer)  # m + 1 is stored: not a first
        store(database_url, [m + 33], writer)  # past the gap: cannot reach the minute before
    finally:
        writer.close()
    assert pads(db) == {m: [True, False, False]}
    # A writer that has not seen this sensor's readings cannot tell: it marks.
    store(database_url, [m + 23])
    assert pads(db) == {m: [True]}
    # A pass reading the minute before right now (its lock held): marked, and the gateway did not wait.
    other = psycopg.connect(database_url, autocommit=True)
    try:
        with other.transaction():
            read_minutes(other, [(shard, m)])
            started = time.monotonic()
            store(database_url, [m + 62])
            assert time.monotonic() - started < 5
    finally:
        other.close()
    assert pads(db) == {m + 60: [True]}
    # Minutes older than the read marks are kept count as read.
    old = m - 3 * 3600
    store(database_url, [old - 5, old + 2])
    assert pads(db)[old] == [True]


def test_a_first_reading_after_the_minute_before_was_read_re_computes_it(db: psycopg.Connection[Any],
                                                                         database_url: str) -> None:
    """Minute A rolled up while minute B's first reading was not yet stored: B's pass writes
    A again, with the segment from A's last reading to B's first. Had B's first reading been
    stored before A was read, B's pass leaves A alone. Either way every row equals a full
    re-computation from the same readings."""
    circuit = one_circuit_site(db).nodes["C"]
    engine = RollupEngine(GAP)

    def in_time_pass() -> set[float]:
        """Process the queue as due passes of minutes stored before they were due; returns
        the minutes whose rows the passes wrote."""
        db.execute("UPDATE rollup_dirty SET queued_at = now() - interval '2 s', not_before = now()")
        before = {r[0]: r[1] for r in db.execute("SELECT bucket, computed_at FROM rollups_1m WHERE node_id = %s",
                                                 (circuit,))}
        while engine.process_dirty(db):
            pass
        return {r[0].timestamp() for r in db.execute(
            "SELECT bucket, computed_at FROM rollups_1m WHERE node_id = %s", (circuit,)) if before.get(r[0]) != r[1]}

    def full_recompute(t0: float, t1: float) -> None:
        got = {k: v for k, v in snapshot(db, "rollups_1m").items() if t0 <= k[1].timestamp() < t1}
        db.execute("TRUNCATE rollups_1m")
        engine.recompute_range(db, datetime.fromtimestamp(t0, UTC), datetime.fromtimestamp(t1, UTC))
        full = snapshot(db, "rollups_1m")
        assert got and got == full

    a = time.time() // 60 * 60 - 1200
    writer = BatchWriter(database_url, rollup_settle_s=15.0, rollup_gap_s=GAP)
    try:
        # Late: B's first reading comes after A's pass.
        store(database_url, [a + 3 + 10 * i for i in range(6)], writer)
        assert in_time_pass() == {a}
        store(database_url, [a + 63 + 10 * i for i in range(6)], writer)
        assert in_time_pass() == {a, a + 60}  # A again: the segment from a + 53 to a + 63
        full_recompute(a - 120, a + 180)
        # On time: D's first reading is in before C's pass (which takes it, as D's row is due too).
        c = a + 300
        store(database_url, [c + 3 + 10 * i for i in range(6)] + [c + 63], writer)
        assert in_time_pass() == {c, c + 60}
        store(database_url, [c + 73 + 10 * i for i in range(5)], writer)
        assert in_time_pass() == {c + 60}  # C is left alone
        full_recompute(c - 120, c + 180)
    finally:
        writer.close()
