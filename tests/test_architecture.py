"""The shape of the code and of its deployments: layers that only point down, and a Docker
path that carries every package and runs every long-running service. No Docker engine runs
here, so the Dockerfile and docker-compose.yml are held to the packages and the CLI by reading."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from launcher.cli import app
from launcher.up import LONG_RUNNING
from wattline import PROJECT_ROOT
from wattline.settings import Settings

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGES = [p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=300)


def test_the_layer_contract_holds_and_fails_on_an_upward_import(tmp_path: Path) -> None:
    for name in [*PACKAGES, "bench"]:
        shutil.copytree(PROJECT_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path)
    kept = lint_imports(tmp_path)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    # The core reaching up into a door, as wattline/privacy.py once reached into analytics:
    with (tmp_path / "wattline" / "audit.py").open("a") as f:
        f.write("\nimport api.problems  # noqa\n")
    broken = lint_imports(tmp_path)
    assert broken.returncode != 0
    assert "wattline is not allowed to import api" in broken.stdout


def test_the_core_imports_no_service_package() -> None:
    upward = re.compile(r"^\s*(from|import) (ingest|analytics|alerts|api|dashboard|sensor_sim|bench|launcher)\b",
                        re.MULTILINE)
    found = [str(p.relative_to(PROJECT_ROOT)) for p in (PROJECT_ROOT / "wattline").rglob("*.py")
             if upward.search(p.read_text(encoding="utf-8"))]
    assert found == []


def test_the_image_carries_every_package_and_the_migrations() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text(encoding="utf-8")
    copied = set(re.findall(r"^COPY (\S+) \./\1\s*$", dockerfile, re.MULTILINE))
    assert set(PACKAGES) | {"sql", "scripts"} <= copied, sorted(set(PACKAGES) - copied)
    entry = re.search(r'^ENTRYPOINT \["(\w+)"\]', dockerfile, re.MULTILINE)
    assert entry is not None and entry.group(1) in PYPROJECT["project"]["scripts"]


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text(encoding="utf-8")))


def _cli_commands() -> set[str]:
    commands: dict[str, Any] = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    return set(commands)


def test_compose_runs_every_long_running_service_with_a_health_check() -> None:
    services = _compose()["services"]
    by_command = {tuple(s["command"]): (name, s) for name, s in services.items() if "command" in s}
    defaults = Settings(demo=True)
    for spec in LONG_RUNNING:
        assert spec.args in by_command, f"docker-compose.yml runs no `wattline {' '.join(spec.args)}`"
        name, service = by_command[spec.args]
        check = " ".join(service.get("healthcheck", {}).get("test", []))
        port = getattr(defaults, spec.health_port_setting)
        assert f"127.0.0.1:{port}/health" in check, f"{name}: no health check on its port {port}"
    commands = _cli_commands()
    for name, service in services.items():
        if "command" in service:
            assert service["command"][0] in commands, f"{name} runs an unknown command {service['command'][0]}"


def test_compose_ships_no_default_secret() -> None:
    secret = _compose()["x-app"]["environment"]["WATTLINE_SECRET_KEY"]
    assert re.fullmatch(r"\$\{WATTLINE_SECRET_KEY:\?.+\}", secret), secret


@pytest.mark.parametrize("spec", LONG_RUNNING, ids=lambda s: s.name)
def test_every_long_running_service_is_a_cli_command(spec: Any) -> None:
    assert spec.args[0] in _cli_commands()
