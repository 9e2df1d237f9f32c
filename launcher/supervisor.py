"""`wattline up`'s process supervisor: a service that exits is restarted with back-off, its
restarts show in the log and in health, and every other service keeps serving. Only a
stop (Ctrl-C, SIGTERM) ends them all."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattline.service import backoff_s

#: A child that ran this long before exiting starts its back-off afresh.
STEADY_S = 60.0
MAX_RESTART_DELAY_S = 60.0


@dataclass
class Child:
    """One supervised process and its record."""

    name: str
    command: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures_in_a_row: int = 0
    last_exit: int | None = None
    next_start: float = 0.0
    log_path: Path | None = None

    def status(self) -> dict[str, Any]:
        """What health shows of the child."""
        running = self.proc is not None and self.proc.poll() is None
        return {"running": running, "pid": self.proc.pid if running and self.proc else None,
                "restarts": self.restarts, "last_exit": self.last_exit}


@dataclass
class Supervisor:
    """Start children, keep them running, stop them all on request."""

    env: Mapping[str, str]
    log_dir: Path
    say: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, command: Sequence[str]) -> Child:
        """Start a child now; it is restarted whenever it exits until `stop`."""
        child = Child(name, list(command), log_path=self.log_dir / f"{name}.log")
        self.children.append(child)
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        assert child.log_path is not None
        log = child.log_path.open("ab")
        child.proc = subprocess.Popen(child.command, env=dict(self.env), stdout=log, stderr=log)
        log.close()  # the child has its own descriptor
        child.started_at = time.monotonic()
        self.say(f"started {child.name} (log: {child.log_path})")

    def tend(self) -> None:
        """Restart what has exited, once its back-off has passed. Call this often."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                child.last_exit = child.proc.returncode
                child.proc = None
                child.restarts += 1
                child.failures_in_a_row = 1 if now - child.started_at > STEADY_S else child.failures_in_a_row + 1
                delay = backoff_s(child.failures_in_a_row, base_s=1.0, cap_s=MAX_RESTART_DELAY_S)
                child.next_start = now + delay
                self.say(f"{child.name} exited with {child.last_exit}; restarting in {delay:.1f} s "
                         f"(restart {child.restarts}; see {child.log_path})")
            if child.proc is None and now >= child.next_start:
                self._spawn(child)

    def health(self) -> dict[str, Any]:
        """Every child's status; "ok" only while all run."""
        services = {c.name: c.status() for c in self.children}
        ok = all(s["running"] for s in services.values())
        return {"status": "ok" if ok else "degraded", "services": services}

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every child (last started first), then kill what has not ended."""
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(5)
