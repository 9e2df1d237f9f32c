"""A private Mosquitto broker with its own config and persistence folder."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ingest.broker_security import service_url, write_initial_config
from launcher.localstack.postgres import ServiceError
from launcher.localstack.software import dynsec_plugin, mosquitto_binary, wait_for_port

SERVICES = ("admin", "gateway", "simulator")
MAX_QUEUED_MESSAGES = 10_000_000  # packs per client: 100 M readings at 10 a pack


@dataclass
class LocalMosquitto:
    """Anonymous clients are refused: the services sign in with passwords kept (0600) in
    `service-credentials.json`, bridges with the credentials `wattline broker-sync` applies."""

    data_dir: Path
    port: int
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """The address alone: no credentials, so the broker refuses it."""
        return f"mqtt://127.0.0.1:{self.port}"

    def url_for(self, service: str) -> str:
        """The broker as `service` (admin, gateway or simulator) signs in to it."""
        return service_url("127.0.0.1", self.port, service, self.service_passwords()[service])

    def service_passwords(self) -> dict[str, str]:
        """The service clients' passwords (made at the first start, kept 0600)."""
        path = self.data_dir / "service-credentials.json"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps({s: secrets.token_urlsafe(24) for s in SERVICES}))
            tmp.chmod(0o600)
            tmp.rename(path)
        return dict(orjson.loads(path.read_bytes()))

    def write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "mosquitto")
        plugin = dynsec_plugin()
        if plugin is None:
            raise ServiceError("Mosquitto's dynamic-security plugin is missing: reinstall the mosquitto package")
        security = self.data_dir / "dynamic-security.json"
        write_initial_config(security, self.service_passwords())
        # Queues are deep because gateways apply back-pressure by not acking: the
        # broker must hold what they have not taken yet, not drop it. Deep, not unlimited:
        # with `max_queued_messages 0` Mosquitto before 2.0.22 drops a client's connection
        # after refusing it a publish (eclipse-mosquitto/mosquitto#3244; pinned in
        # tests/test_bridge_credentials.py), so a bridge that strays would be cut off.
        conf.write_text("\n".join([
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false",
            f"plugin {plugin}",
            f"plugin_opt_config_file {security}",
            f"user {user}",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "autosave_interval 5",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            "max_queued_bytes 0",
            "max_inflight_messages 0",
            "message_size_limit 1048576",
            "persistent_client_expiration 7d",
            # Notices carry each connection; on $SYS they let the broker sync pause a
            # bridge that reconnects in a tight loop (ingest/reconnect_guard.py).
            "log_dest stderr",
            "log_dest topic",
            "log_type error",
            "log_type warning",
            "log_type notice",
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
