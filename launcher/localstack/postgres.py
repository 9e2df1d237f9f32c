"""A private PostgreSQL cluster with TimescaleDB preloaded, in a folder of ours.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres`
system user (created by Debian's package) and its commands run through `runuser`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from launcher.localstack.software import pg_bindir


class ServiceError(RuntimeError):
    pass


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int
    #: fsync off is for throwaway test clusters only: it survives a killed server, not a
    #: crashed machine.
    durable: bool = True

    @property
    def url(self) -> str:
        return f"postgresql://wattline@127.0.0.1:{self.port}/postgres"

    def url_for(self, dbname: str) -> str:
        return f"postgresql://wattline@127.0.0.1:{self.port}/{dbname}"

    @property
    def _bindir(self) -> Path:
        bindir = pg_bindir()
        if bindir is None:
            raise ServiceError("PostgreSQL is not installed: run scripts/install-services.sh")
        return bindir

    def _run_as_owner(self, args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        cmd = args
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload, no-any-return]

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialised():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            shutil.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
            # The postgres user must be able to reach its folder (mkdtemp makes 0700).
            parent = self.data_dir.parent
            parent.chmod(parent.stat().st_mode | 0o011)
        self.data_dir.chmod(0o700)
        res = self._run_as_owner([
            str(self._bindir / "initdb"), "-D", str(self.data_dir), "-U", "wattline",
            "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8",
        ])
        if res.returncode != 0:
            raise ServiceError(f"initdb failed: {res.stderr.strip()}")
        conf = [
            f"port = {self.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.data_dir}'",
            "shared_preload_libraries = 'timescaledb'",
            "timescaledb.telemetry_level = off",
            "max_connections = 200",
            "log_min_messages = warning",
            "log_min_error_statement = panic",
        ]
        if self.durable:
            # Write-heavy tuning (what timescaledb-tune suggests): a quarter of the memory
            # for buffers, so that the active chunk's (sensor, ts) index stays cached; rare
            # checkpoints and compressed full-page images, since inserts across 100,000
            # sensors touch every index leaf (the 10-minute soak slowed by 7 % without).
            ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
            conf += [f"shared_buffers = {max(512, min(ram_mb // 4, 8192))}MB", "max_wal_size = 16GB",
                     "checkpoint_timeout = 15min", "checkpoint_completion_target = 0.9", "wal_compression = on"]
        else:  # throwaway test clusters
            conf += ["shared_buffers = 512MB", "max_wal_size = 4GB", "fsync = off", "full_page_writes = off"]
        with (self.data_dir / "postgresql.auto.conf").open("a") as f:
            f.write("\n".join(conf) + "\n")

    def running(self) -> bool:
        res = self._run_as_owner([str(self._bindir / "pg_ctl"), "-D", str(self.data_dir), "status"])
        return res.returncode == 0

    def start(self) -> None:
        self.init()
        if self.running():
            return
        # The port in postgresql.auto.conf may be from an earlier run; -p wins.
        res = self._run_as_owner([
            str(self._bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"),
            "-o", f"-p {self.port}", "-w", "-t", "60", "start",
        ])
        if res.returncode != 0:
            log = (self.data_dir / "server.log")
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ServiceError(f"PostgreSQL did not start: {res.stderr.strip()}\n{tail}")

    def stop(self, mode: str = "fast") -> None:
        if self.initialised() and self.running():
            self._run_as_owner([str(self._bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"])

    def kill(self) -> None:
        """Kill -9 the postmaster, as a crash would (fault tests)."""
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, 9)
