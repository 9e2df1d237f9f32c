"""One shape for every long-running service: the rollup worker, the alert scheduler,
retention (and whatever comes next: the mail outbox, export jobs).

A `LoopService` runs `one_pass(conn)` again and again on a database connection that it
re-opens with jittered, capped back-off when the database goes away. It never dies of
one bad pass: an error is logged, counted (`wattline_service_errors_total`) and kept on
the service (`last_error`, `failing_since`), and the next pass runs on time. Health is
fresh passes; `serve_http` puts it beside the Prometheus metrics; `stop()` ends it
gracefully (the pass in hand finishes).

A pass returns True when it left work waiting, and the next one starts at once.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
import psycopg
import structlog
from prometheus_client import Counter, Gauge, make_wsgi_app

from wattline.db import connect_long_lived

log = structlog.get_logger("wattline.service")

PASSES = Counter("wattline_service_passes_total", "Passes a long-running service completed", ["service"])
ERRORS = Counter("wattline_service_errors_total", "Passes that failed, by kind (database or error)",
                 ["service", "kind"])
LAST_PASS = Gauge("wattline_service_last_pass_timestamp_seconds", "When the service last completed a pass",
                  ["service"])
DATABASE_UP = Gauge("wattline_service_database_up", "1 while the service's database connection works", ["service"])

Pass = Callable[[psycopg.Connection[Any]], bool]
MAX_BACKOFF_S = 30.0


def backoff_s(failures: int, base_s: float = 0.5, cap_s: float = MAX_BACKOFF_S) -> float:
    """Exponential back-off with ±20 % jitter, so that many services do not reconnect in step."""
    return float(min(cap_s, base_s * 2 ** max(0, failures - 1)) * random.uniform(0.8, 1.2))


class LoopService(threading.Thread):
    """Run `one_pass` every `period_s` on a reconnecting database connection, until stopped."""

    def __init__(self, name: str, database_url: str, one_pass: Pass, period_s: float, *,
                 stale_after_s: float | None = None, setup: Callable[[], None] | None = None,
                 teardown: Callable[[], None] | None = None) -> None:
        """`stale_after_s`: no completed pass for this long makes health fail (default 3 periods + 30 s)."""
        super().__init__(name=name, daemon=True)
        self.service = name
        self.database_url = database_url
        self.one_pass = one_pass
        self.period_s = period_s
        self.stale_after_s = stale_after_s if stale_after_s is not None else 3 * period_s + 30.0
        self._setup, self._teardown = setup, teardown
        self.stop_event = threading.Event()
        self.started_at = time.time()
        self.last_pass_at = 0.0
        self.passes = 0
        self.errors = 0
        self.last_error: str | None = None
        self.failing_since: datetime | None = None
        self.database_up = False

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the loop to stop after the pass in hand, and wait for it."""
        self.stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout_s)

    def health(self) -> dict[str, Any] | None:
        """A status dict while passes complete on time, else None (the endpoint answers 503)."""
        fresh = time.time() - self.last_pass_at < self.stale_after_s
        if not fresh or not self.is_alive():
            return None
        return {"status": "ok", "service": self.service, "last_pass_at": self.last_pass_at, "passes": self.passes,
                "errors": self.errors, "last_error": self.last_error,
                "failing_since": self.failing_since.isoformat() if self.failing_since else None}

    def run(self) -> None:
        """The loop: connect, pass, sleep; a failure is recorded and the loop goes on."""
        conn: psycopg.Connection[Any] | None = None
        failures = 0
        if self._setup:
            self._setup()
        try:
            while not self.stop_event.is_set():
                wait = self.period_s
                try:
                    if conn is None or conn.closed:
                        conn = connect_long_lived(self.database_url)
                    self._set_database(True)
                    more = self.one_pass(conn)
                    self._passed()
                    failures = 0
                    if more:
                        continue
                except psycopg.OperationalError as exc:
                    failures += 1
                    self._failed("database", exc)
                    self._set_database(False)
                    if conn is not None:
                        conn.close()
                    conn = None
                    wait = backoff_s(failures)
                except Exception as exc:  # a failure stays where it starts: the next pass runs on time
                    self._failed("error", exc)
                    if conn is not None and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        conn.close()
                        conn = None
                self.stop_event.wait(wait)
        finally:
            if conn is not None:
                conn.close()
            if self._teardown:
                self._teardown()

    def _passed(self) -> None:
        self.passes += 1
        self.last_pass_at = time.time()
        self.last_error = None
        self.failing_since = None
        PASSES.labels(self.service).inc()
        LAST_PASS.labels(self.service).set(self.last_pass_at)

    def _failed(self, kind: str, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        self.failing_since = self.failing_since or datetime.now(UTC)
        ERRORS.labels(self.service, kind).inc()
        if kind == "database":
            log.warning("service_database_unavailable", service=self.service, error=self.last_error)
        else:
            log.error("service_pass_failed", service=self.service, error=self.last_error)

    def _set_database(self, up: bool) -> None:
        self.database_up = up
        DATABASE_UP.labels(self.service).set(1 if up else 0)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_http(port: int, ready: Callable[[], dict[str, Any] | None], *, name: str = "health") -> WSGIServer:
    """Serve Prometheus metrics on /metrics and `ready()` on /health: 200 when its status is
    "ok", else 503 with what it says (None: unavailable)."""
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/health":
            status = ready() or {"status": "unavailable"}
            ok = status.get("status") == "ok"
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
            return [orjson.dumps(status)]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    server = make_server("127.0.0.1", port, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name=f"{name}-http", daemon=True).start()
    return server


def run_until_signalled(service: LoopService, health_port: int) -> None:
    """Run one service in the foreground with its health endpoint; SIGTERM or Ctrl-C stops it gracefully."""
    def on_signal(signum: int, frame: FrameType | None) -> None:
        service.stop_event.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    http = serve_http(health_port, service.health, name=service.service) if health_port else None
    service.start()
    try:
        while service.is_alive():
            service.join(0.5)
    finally:
        service.stop()
        if http is not None:
            http.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
