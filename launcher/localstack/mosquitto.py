"""A private Mosquitto broker with its own config and persistence folder."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from launcher.localstack.postgres import ServiceError
from launcher.localstack.software import mosquitto_binary, wait_for_port


@dataclass
class LocalMosquitto:
    data_dir: Path
    port: int
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "mosquitto")
        # Loopback only, so anonymous clients are acceptable for the embedded default;
        # deployments use per-bridge credentials and ACLs (see docker/mosquitto).
        # Queues are deep because gateways apply back-pressure by not acking: the
        # broker must hold what they have not taken yet, not drop it.
        conf.write_text("\n".join([
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"user {user}",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "autosave_interval 5",
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "max_inflight_messages 0",
            "message_size_limit 1048576",
            "persistent_client_expiration 7d",
            "log_type error",
            "log_type warning",
            "",
        ]))
        return conf

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        conf = self.write_config()
        log = (self.data_dir / "mosquitto.log").open("ab")
        self._proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=log)
        if not wait_for_port(self.port, 15):
            self.stop()
            raise ServiceError(f"Mosquitto did not start on port {self.port}; see {self.data_dir}/mosquitto.log")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None
