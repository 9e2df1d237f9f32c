"""`wattline up`: the whole product on one machine, with the embedded services."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType
from wsgiref.simple_server import WSGIServer

import typer

from launcher.demo import DEMO_PV_EVERY, DEMO_UNASSIGNED_EVERY, seed_demo
from launcher.localstack import LocalMosquitto, LocalPostgres, ensure_installed, missing_software
from launcher.localstack.software import wait_for_port
from launcher.supervisor import Supervisor
from wattline.db import create_database, with_database
from wattline.migrate import migrate
from wattline.readings_chunks import describe_sizing, size_chunks
from wattline.service import serve_http
from wattline.settings import Settings


@dataclass(frozen=True)
class ServiceSpec:
    """A long-running service of `wattline up` (and of docker-compose.yml): its CLI command
    and the setting that names the port its health endpoint answers on."""

    name: str
    args: tuple[str, ...]
    health_port_setting: str


LONG_RUNNING = (
    ServiceSpec("gateway", ("gateway",), "gateway_metrics_port"),  # with the rollup worker in-process
    ServiceSpec("api", ("api",), "api_port"),
    ServiceSpec("dashboard", ("dashboard",), "dashboard_port"),
    ServiceSpec("alerts", ("alerts",), "alerts_health_port"),
    ServiceSpec("exports", ("exports",), "exports_health_port"),
    ServiceSpec("retention", ("retention", "--every-hours", "6"), "retention_health_port"),
    ServiceSpec("packing", ("packing",), "packing_health_port"),
    # Applies bridges' MQTT credentials to the broker; runs where there is an admin sign-in.
    ServiceSpec("broker-sync", ("broker-sync",), "broker_sync_health_port"),
)


def wait_for_http(url: str, timeout_s: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def say(message: str) -> None:
    typer.secho(f"[wattline up] {message}", bold=True)


def run_up(settings: Settings, *, history_hours: float, sites: int, bridges: int, sensors: int) -> None:
    """Start the embedded services (unless URLs are set), migrate, seed the demo and run every service."""
    postgres: LocalPostgres | None = None
    mosquitto: LocalMosquitto | None = None
    supervisor: Supervisor | None = None
    http: WSGIServer | None = None
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not settings.database_url or not settings.mqtt_url:
            missing = missing_software()
            if missing:
                say(f"installing {', '.join(missing)} (needs root; takes about a minute the first time)")
                ensure_installed()
            else:
                say("PostgreSQL, TimescaleDB and Mosquitto are installed")
        database_url = settings.database_url
        if not database_url:
            postgres = LocalPostgres(settings.data_dir / "postgres", settings.local_pg_port)
            say(f"starting PostgreSQL + TimescaleDB on 127.0.0.1:{postgres.port} (data in {postgres.data_dir})")
            postgres.start()
            database_url = with_database(postgres.url, "wattline")
        else:
            say("using the database at WATTLINE_DATABASE_URL")
        mqtt_url, admin_url, simulator_url = settings.mqtt_url, settings.mqtt_admin_url, settings.simulator_mqtt_url
        if not mqtt_url:
            mosquitto = LocalMosquitto(settings.data_dir / "mosquitto", settings.local_mqtt_port)
            say(f"starting Mosquitto on 127.0.0.1:{mosquitto.port} (anonymous clients refused; "
                f"service sign-ins in {mosquitto.data_dir}/service-credentials.json)")
            mosquitto.start()
            mqtt_url, admin_url = mosquitto.url_for("gateway"), mosquitto.url_for("admin")
            simulator_url = mosquitto.url_for("simulator")
        else:
            say("using the broker at WATTLINE_MQTT_URL")
        # Resolved once: every component below gets these settings (children: the same values by env).
        settings = settings.model_copy(update={"database_url": database_url, "mqtt_url": mqtt_url,
                                               "mqtt_admin_url": admin_url, "simulator_mqtt_url": simulator_url})
        if create_database(database_url):
            say("created database 'wattline'")
        applied = migrate(database_url)
        say(f"migrations applied: {', '.join(applied)}" if applied else "schema is up to date")

        env = {**os.environ, "WATTLINE_DATABASE_URL": database_url, "WATTLINE_MQTT_URL": mqtt_url,
               "WATTLINE_MQTT_ADMIN_URL": admin_url, "WATTLINE_SIMULATOR_MQTT_URL": simulator_url,
               "WATTLINE_DEMO": "true" if settings.demo else "false",
               "WATTLINE_ALLOW_PRIVATE_DESTINATIONS": "true" if settings.allow_private_destinations else "false",
               "WATTLINE_SPOOL_DIR": str(settings.data_dir / "spool"),
               # One gateway: a plain subscription, which survives a broker restart.
               "WATTLINE_MQTT_SHARE_GROUP": os.environ.get("WATTLINE_MQTT_SHARE_GROUP", "")}
        mail_dir = settings.data_dir / "mail"
        if settings.smtp_host is None:  # no mail server configured: a local mailbox keeps the demo's mail
            env.update(WATTLINE_SMTP_HOST="127.0.0.1", WATTLINE_SMTP_PORT=str(settings.local_smtp_port))
        cli = [sys.executable, "-m", "launcher.cli"]
        counts = seed_demo(database_url, sites=sites, bridges=bridges, sensors=sensors)
        say(f"readings chunks: {describe_sizing(size_chunks(database_url, settings))}")
        say(f"demo portfolio: {counts['sites']} sites, {counts['circuits']} circuits, "
            f"{counts['sensors']} sensors assigned, {counts['unassigned']} left for an installer")
        logs = settings.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        supervisor = Supervisor(env, logs, say)
        if settings.smtp_host is None:
            supervisor.start("mailbox", [*cli, "mailbox", "--dir", str(mail_dir),
                                         "--port", str(settings.local_smtp_port)])
        for service in LONG_RUNNING:
            if service.name == "broker-sync" and not admin_url:
                say("no WATTLINE_MQTT_ADMIN_URL: bridge credentials are recorded, but no broker is told of them")
                continue
            supervisor.start(service.name, [*cli, *service.args])
        # The broker drops what is published before any subscription exists: the
        # simulator's back-fill waits until the gateway's session is subscribed.
        if not wait_for_http(f"http://127.0.0.1:{settings.gateway_metrics_port}/health", 60):
            raise RuntimeError("the gateway did not become ready; see its log")
        supervisor.start("simulator", [*cli, "simulate", "--sites", str(sites), "--bridges", str(bridges),
                                       "--sensors", str(sensors), "--unassigned-every", str(DEMO_UNASSIGNED_EVERY),
                                       "--pv-every", str(DEMO_PV_EVERY), "--history-hours", str(history_hours)])
        http = serve_http(settings.up_health_port, supervisor.health, name="up")
        for port in (settings.api_port, settings.dashboard_port):
            wait_for_port(port, 60)
        say("ready:")
        typer.echo(f"  dashboard   http://{settings.dashboard_host}:{settings.dashboard_port}/"
                   "   (demo login: demo@wattline.example / wattline-demo)")
        typer.echo(f"  API         http://{settings.api_host}:{settings.api_port}/docs")
        typer.echo(f"  metrics     http://127.0.0.1:{settings.gateway_metrics_port}/metrics")
        typer.echo(f"  alerts      http://127.0.0.1:{settings.alerts_health_port}/health")
        typer.echo(f"  services    http://127.0.0.1:{settings.up_health_port}/health   (restarts of each)")
        typer.echo(f"  database    psql {database_url}")
        if settings.smtp_host is None:
            typer.echo(f"  mail        {mail_dir}/new   (a Maildir: one file per message sent)")
        typer.echo(f"  broker      mosquitto_sub -L {mqtt_url}/wattline/v1/bridges/+/status -v")
        typer.echo("              (the gateway's sign-in; each bridge gets its own when registered)")
        typer.echo("Ctrl-C stops everything; a service that exits is restarted.")
        while not stopping:
            supervisor.tend()
            time.sleep(0.5)
    finally:
        say("stopping")
        if supervisor is not None:
            supervisor.stop()
        if http is not None:
            http.shutdown()
        if mosquitto is not None:
            mosquitto.stop()
        if postgres is not None:
            postgres.stop()
        say("stopped")

