"""Finding the service binaries, and installing them through scripts/install-services.sh."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from wattline import PROJECT_ROOT

INSTALL_SCRIPT = PROJECT_ROOT / "scripts" / "install-services.sh"


def pg_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (Debian layout), or pg_config's."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if (bindir / "postgres").exists():
            return bindir
    return None


def timescaledb_installed(bindir: Path) -> bool:
    out = subprocess.run([str(bindir / "pg_config"), "--sharedir", "--pkglibdir"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0 or len(out.stdout.split()) < 2:
        return False
    sharedir, pkglibdir = out.stdout.split()[:2]
    return (Path(sharedir) / "extension" / "timescaledb.control").exists() and any(
        Path(pkglibdir).glob("timescaledb*.so")
    )


def missing_software() -> list[str]:
    missing = []
    bindir = pg_bindir()
    if bindir is None:
        missing.append("postgresql")
    elif not (bindir / "pg_config").exists() or not timescaledb_installed(bindir):
        missing.append("timescaledb")
    if (shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists()) or dynsec_plugin() is None:
        missing.append("mosquitto")
    return missing


def ensure_installed(with_browser: bool = False) -> None:
    """Install whatever of PostgreSQL, TimescaleDB and Mosquitto is missing (idempotent)."""
    if not missing_software() and not with_browser:
        return
    args = ["bash", str(INSTALL_SCRIPT)] + (["--with-browser"] if with_browser else [])
    subprocess.run(args, check=True)


def mosquitto_binary() -> str:
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


DYNSEC_PLUGIN = "mosquitto_dynamic_security.so"


def dynsec_plugin() -> Path | None:
    """Mosquitto's dynamic-security plugin (Debian's mosquitto package ships it)."""
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib"):
        if (Path(folder) / DYNSEC_PLUGIN).exists():
            return Path(folder) / DYNSEC_PLUGIN
    found = sorted(Path("/usr/lib").glob(f"*/{DYNSEC_PLUGIN}"))
    return found[0] if found else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False
