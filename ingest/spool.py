"""A bounded, durable local spool for packs that arrived while the database was down.

Each batch becomes one segment file, written to a temporary name, fsynced and renamed,
so a crash leaves either a whole segment or none. Segments replay oldest first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from ingest.packs import RawPack, SparkplugNote
from ingest.sparkplug_session import Refusal, SessionState


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.tmp"):
            leftover.unlink()

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob("*.seg"))

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.segments())

    def full(self) -> bool:
        return self.size() >= self.max_bytes

    def append(self, packs: list[RawPack]) -> Path:
        # `limited` travels too: a pack over its bridge's rate replays as a rejection, not as
        # data; and so does a Sparkplug pack's note, its session and what it refused.
        data = msgspec.msgpack.encode([(p.topic, p.payload, p.received_at, p.limited, _note_row(p.sparkplug))
                                       for p in packs])
        name = f"{os_time_ns():020d}-{os.getpid()}.seg"
        tmp = self.directory / (name + ".tmp")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        final = self.directory / name
        tmp.rename(final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final

    @staticmethod
    def read(segment: Path) -> list[RawPack]:
        rows = msgspec.msgpack.decode(segment.read_bytes())
        # Segments written before `limited` was kept have three fields, and before Sparkplug
        # four: none of their packs was marked.
        return [RawPack(row[0], row[1], row[2], limited=bool(row[3]) if len(row) > 3 else False,
                        sparkplug=_note(row[4]) if len(row) > 4 else None) for row in rows]


def _note_row(note: SparkplugNote | None) -> tuple[Any, ...] | None:
    if note is None:
        return None
    state = None if note.state is None else (note.state.bd_seq, note.state.seq, note.state.aliases)
    return (note.key, state, note.ended, [tuple(r) for r in note.refused], note.topic, note.payload,
            [tuple(r) for r in note.readings])


def _note(row: tuple[Any, ...] | None) -> SparkplugNote | None:
    if row is None:
        return None
    key, state, ended, refused, topic, payload, readings = row
    return SparkplugNote(None if key is None else (key[0], key[1]),
                         None if state is None else SessionState(state[0], state[1], state[2]), ended,
                         tuple(Refusal(*r) for r in refused), topic, payload, tuple((s, t, a) for s, t, a in readings))


def os_time_ns() -> int:
    import time

    return time.time_ns()
