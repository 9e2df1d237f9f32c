"""Pausing a bridge that reconnects in a tight loop (#21).

Every connection costs the broker a password check (PBKDF2) and a session, and a bridge
whose firmware reconnects as fast as it can burns both for everyone. The broker writes
each accepted connection to its own log, which it also publishes on `$SYS/broker/log/N`
(`log_dest topic`, `log_type notice`). The broker sync's admin client reads that topic;
`ConnectionWatch` counts each client's connections over the last minute. A bridge above
the limit is paused: its client is disabled through the dynamic-security plugin, which
closes its session and refuses its sign-in at CONNACK (cheap: no session is made), until
the pause runs out. Other bridges and the service clients are never touched; a pause is
recorded against its bridge (`wattline.bridge_credentials.pause`) and counted.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import psycopg
import structlog
from prometheus_client import Counter, Gauge

from wattline import bridge_credentials

log = structlog.get_logger("wattline.reconnect_guard")

LOG_TOPIC = "$SYS/broker/log/N"  # notices: Mosquitto's connection messages
WINDOW_S = 60.0
_CONNECTED = re.compile(r"New client connected from \S+ as (\S+) \(")

PAUSES = Counter("wattline_broker_bridge_pauses_total", "Bridges paused for reconnecting in a tight loop")
PAUSED = Gauge("wattline_broker_paused_bridges", "Bridges whose sign-in is paused now")


class ConnectionWatch:
    """Counts accepted connections per client id from the broker's log lines (any thread)."""

    def __init__(self, limit_per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit_per_minute
        self._clock = clock
        self._seen: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def log_line(self, payload: bytes) -> None:
        match = _CONNECTED.search(payload.decode("utf-8", "replace"))
        if match is None:
            return
        with self._lock:
            self._seen[match.group(1)].append(self._clock())

    def over_limit(self) -> list[str]:
        """Client ids that connected more than `limit` times in the last minute; each is
        forgotten once named, so a pause starts its count afresh."""
        horizon = self._clock() - WINDOW_S
        out: list[str] = []
        with self._lock:
            for client_id in list(self._seen):
                times = self._seen[client_id]
                while times and times[0] < horizon:
                    times.popleft()
                if len(times) > self.limit:
                    out.append(client_id)
                if len(times) > self.limit or not times:
                    del self._seen[client_id]
        return out


Run = Callable[[list[dict[str, str]]], list[str | None]]  # commands -> each one's error


def pause_loops(conn: psycopg.Connection[Any], watch: ConnectionWatch, run: Run, *,
                first_s: float) -> int:
    """Pause every bridge over the limit; returns how many were paused."""
    paused = 0
    for client_id in watch.over_limit():
        until = bridge_credentials.pause(conn, client_id, first_s=first_s)
        if until is None:
            continue  # a service client, or no live bridge credential: not ours to pause
        error = run([{"command": "disableClient", "username": client_id}])[0]
        if error:  # recorded; the next reconciliation disables it again
            log.warning("bridge pause refused by the broker", bridge=client_id, error=error)
        PAUSES.inc()
        paused += 1
        log.warning("bridge paused: reconnecting in a tight loop", bridge=client_id, until=until.isoformat())
    return paused


def release_due(conn: psycopg.Connection[Any], run: Run) -> int:
    """Enable the clients whose pause has run out; returns how many."""
    due = bridge_credentials.pauses_due(conn)
    if due:
        errors = run([{"command": "enableClient", "username": name} for name in due])
        for name, error in zip(due, errors, strict=True):
            if error and error != "Client not found":
                log.warning("bridge release refused by the broker", bridge=name, error=error)
                continue  # stays paused on record; tried again next pass
            bridge_credentials.mark_released(conn, name)
    return len(due)
