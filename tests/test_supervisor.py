"""`wattline up` supervises: a service that exits is restarted with back-off, its restarts
show in health and in the log, and the others keep serving. Real processes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx

from launcher.localstack import free_port
from launcher.supervisor import Supervisor
from tests.factories import wait_for
from wattline.service import serve_http

CRASHER = [sys.executable, "-c", "import sys, time; time.sleep(0.2); sys.exit(3)"]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def test_a_crashing_service_is_restarted_and_the_others_keep_serving(tmp_path: Path) -> None:
    said: list[str] = []
    supervisor = Supervisor(dict(os.environ), tmp_path, said.append)
    steady = supervisor.start("steady", SLEEPER)
    crasher = supervisor.start("crasher", CRASHER)
    port = free_port()
    http = serve_http(port, supervisor.health)
    first_pid = steady.proc.pid if steady.proc else None
    try:
        started = time.monotonic()
        def restarted_thrice() -> bool:
            supervisor.tend()
            return crasher.restarts >= 3

        wait_for(restarted_thrice, 30, 0.05)
        # Back-off grows: three restarts take at least 1 + 2 s of waiting (less 20 % jitter).
        assert time.monotonic() - started > 2.0
        assert crasher.last_exit == 3
        assert steady.proc is not None and steady.proc.poll() is None and steady.proc.pid == first_pid
        assert any("crasher exited with 3; restarting in" in line for line in said)
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["services"]["crasher"]["restarts"] >= 3
        assert health["services"]["steady"] == {"running": True, "pid": first_pid, "restarts": 0, "last_exit": None}
    finally:
        supervisor.stop(timeout_s=10)
        http.shutdown()
    assert steady.proc is not None and steady.proc.poll() is not None  # a stop ends them all


def test_health_is_503_while_a_service_is_down(tmp_path: Path) -> None:
    supervisor = Supervisor(dict(os.environ), tmp_path, lambda _: None)
    crasher = supervisor.start("crasher", [sys.executable, "-c", "raise SystemExit(1)"])
    port = free_port()
    http = serve_http(port, supervisor.health)
    try:
        assert crasher.proc is not None
        crasher.proc.wait(10)
        res = httpx.get(f"http://127.0.0.1:{port}/health")
        assert res.status_code == 503 and res.json()["status"] == "degraded"
    finally:
        supervisor.stop(timeout_s=5)
        http.shutdown()
