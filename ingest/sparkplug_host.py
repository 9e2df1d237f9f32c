"""The gateway as a Sparkplug B host application: each message through the edge node's
session (ingest/sparkplug_session.py), then on as the SenML pack it amounts to, so the
writer, the spool and the replay treat both wire formats alike.

- DBIRTH / DDATA readings travel on `wattline/v1/bridges/<edge node>/senml`; the writer
  decodes a batch's, bridge by bridge, as SenML packs, under the same rules (time skew,
  ranges) as any bridge's.
- NBIRTH and NDEATH become the bridge's `status` (online, offline).
- What was refused is stored as rejections of the message as sent, with the reason.
- Every message's pack carries its edge node's session after it (`SparkplugNote`); the
  writer stores the last of a batch's with the batch (`save`), and a restarted gateway
  `load`s them, so the broker's redelivery of what was not acked reads on without a rebirth.
- A rebirth is asked (NCMD `Node Control/Rebirth`) at most once per `REBIRTH_EVERY_S` for
  each edge node: every message of a lost session is refused until the births come.

Bridges publish QoS 1, not Sparkplug's QoS 0, for the same no-loss guarantee as SenML.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import psycopg

from ingest.packs import RawPack, SparkplugNote
from ingest.sparkplug_session import Outcome, SessionKey, Sessions, SessionState
from wattline.senml import SENML_TOPIC, STATUS_TOPIC
from wattline.sparkplug import (
    NAMESPACE,
    REBIRTH_METRIC,
    DataType,
    MessageType,
    Metric,
    Payload,
    Topic,
    encode_payload,
)

TOPIC_PREFIX = NAMESPACE + "/"
#: Subscriptions: edge node and device topics, not the hosts' STATE (`spBv1.0/STATE/<id>`).
FILTERS = (NAMESPACE + "/+/+/+", NAMESPACE + "/+/+/+/+")
REBIRTH_EVERY_S = 5.0


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{host_id}"


def state_payload(online: bool) -> bytes:
    """Sparkplug 3.0's host STATE: edge nodes that wait for their primary host read it."""
    return orjson.dumps({"online": online, "timestamp": int(time.time() * 1000)})


def rebirth_request(key: SessionKey) -> tuple[str, bytes]:
    """The NCMD that asks an edge node to publish its births again."""
    group, edge_node = key
    return str(Topic(group, MessageType.NCMD, edge_node)), encode_payload(Payload(
        int(time.time() * 1000), None, (Metric(REBIRTH_METRIC, None, None, DataType.BOOLEAN, True),)))


class SparkplugHost:
    """Sessions, translation and rebirth requests for one gateway; runs in its event loop."""

    def __init__(self, states: Mapping[SessionKey, SessionState] | None = None) -> None:
        self.sessions = Sessions(states)
        self._durable: dict[SessionKey, SessionState] = dict(states or {})
        self._asked: dict[SessionKey, float] = {}
        self.rebirths_asked = 0

    def take(self, topic: str, payload: bytes, received_at: float, mid: int = 0, qos: int = 0, dup: bool = False
             ) -> tuple[RawPack, SessionKey | None]:
        """The pack a message amounts to, and the edge node to ask for a rebirth (None: none
        now, or asked within `REBIRTH_EVERY_S`); `dup`: the broker sends it again."""
        out = self.sessions.handle(topic, payload, dup)
        note = SparkplugNote(out.key, out.state, out.ended, tuple(out.refused), topic if out.refused else "",
                             payload if out.refused else b"", tuple(out.readings))
        return RawPack(*_translated(out, topic), received_at, mid, qos, sparkplug=note), self._rebirth(out)

    def _rebirth(self, out: Outcome) -> SessionKey | None:
        key = out.key
        if not out.rebirth or key is None:
            return None
        now = time.monotonic()
        if now - self._asked.get(key, -REBIRTH_EVERY_S) < REBIRTH_EVERY_S:
            return None
        self._asked[key] = now
        self.rebirths_asked += 1
        return key

    def made_durable(self, packs: Iterable[RawPack]) -> None:
        """These packs are stored (or spooled) and acked: the broker will not send them again."""
        for pack in packs:
            note = pack.sparkplug
            if note is not None and note.key is not None and note.changes_session:
                if note.state is None:
                    self._durable.pop(note.key, None)
                else:
                    self._durable[note.key] = note.state

    def rewind(self) -> None:
        """The connection ended with messages read but not acked, which the broker sends again:
        back to the sessions as of the last acked message, so they read as they did."""
        self.sessions.restore(self._durable)


def _translated(out: Outcome, topic: str) -> tuple[str, bytes]:
    if out.edge_node is not None and out.readings:  # the readings travel in the note
        return SENML_TOPIC.format(bridge=out.edge_node), b""
    if out.edge_node is not None and out.online is not None:
        return STATUS_TOPIC.format(bridge=out.edge_node), b"online" if out.online else b"offline"
    return topic, b""  # nothing to store but the session, and what was refused


def load(conn: psycopg.Connection[Any]) -> dict[SessionKey, SessionState]:
    return {(group, edge): SessionState(bd_seq, seq, {d: {int(a): n for a, n in m.items()} for d, m in aliases.items()})
            for group, edge, bd_seq, seq, aliases in conn.execute(
                "SELECT group_id, edge_node, bd_seq, seq, aliases FROM sparkplug_sessions")}


def save(conn: psycopg.Connection[Any], packs: Iterable[RawPack]) -> None:
    """Store the sessions as the last of these packs left them, in the caller's transaction.
    In key order, so two gateways saving the same edge nodes cannot deadlock."""
    last: dict[SessionKey, SessionState | None] = {}
    for pack in packs:
        note = pack.sparkplug
        if note is not None and note.key is not None and note.changes_session:
            last[note.key] = note.state
    if not last:
        return
    keys = sorted(last)
    ended = [k for k in keys if last[k] is None]
    live = [(k, s) for k in keys if (s := last[k]) is not None]
    if ended:
        conn.execute("""DELETE FROM sparkplug_sessions s USING unnest(%s::text[], %s::text[]) AS e(g, n)
                        WHERE s.group_id = e.g AND s.edge_node = e.n""",
                     ([g for g, _ in ended], [n for _, n in ended]))
    if live:
        conn.execute("""INSERT INTO sparkplug_sessions (group_id, edge_node, bd_seq, seq, aliases)
                        SELECT * FROM unnest(%s::text[], %s::text[], %s::int[], %s::int[], %s::jsonb[])
                        ON CONFLICT (group_id, edge_node) DO UPDATE
                        SET bd_seq = EXCLUDED.bd_seq, seq = EXCLUDED.seq, aliases = EXCLUDED.aliases,
                            updated_at = now()""",
                     ([k[0] for k, _ in live], [k[1] for k, _ in live], [s.bd_seq for _, s in live],
                      [s.seq for _, s in live],
                      [orjson.dumps(s.aliases, option=orjson.OPT_NON_STR_KEYS).decode() for _, s in live]))
