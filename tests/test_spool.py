"""The gateway's spool keeps each pack whole, with its rate-limit mark: a pack over its
bridge's rate that waited out a database outage replays as the rejection it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import psycopg

from ingest.packs import RawPack
from ingest.spool import Spool
from ingest.writer import BatchWriter
from tests.factories import count
from wattline.senml import SENML_TOPIC, encode_pack


def test_a_spooled_pack_keeps_its_rate_limit_mark(tmp_path: Path, db: psycopg.Connection[Any],
                                                  database_url: str) -> None:
    spool = Spool(tmp_path / "spool", 10_000_000)
    body = encode_pack([("CT-1", 1_790_000_000.0, 2.0)])
    packs = [RawPack(SENML_TOPIC.format(bridge="BR-1"), body, 1_790_000_001.0, limited=True),
             RawPack(SENML_TOPIC.format(bridge="BR-1"), body, 1_790_000_002.0)]
    [segment] = [spool.append(packs)]
    back = Spool.read(segment)
    assert [(p.topic, p.payload, p.received_at, p.limited) for p in back] == [
        (p.topic, p.payload, p.received_at, p.limited) for p in packs]
    prepared = BatchWriter(database_url).prepare(back)
    assert [r.rejection.reason for r in prepared.rejected] == ["rate_limited"]
    # A segment written before the mark was kept: its packs replay unmarked.
    old = tmp_path / "old.seg"
    old.write_bytes(msgspec.msgpack.encode([(packs[0].topic, body, 1_790_000_001.0)]))
    assert [p.limited for p in Spool.read(old)] == [False]
    assert count(db, "SELECT count(*) FROM readings") == 0  # nothing was written by preparing
