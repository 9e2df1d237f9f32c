"""`wattline`: one command with a sub-command per service."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from wattline.logs import configure_logging
from wattline.service import run_until_signalled
from wattline.settings import Settings, SettingsError, get_settings

app = typer.Typer(help="Wattline energy monitoring.", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
privacy_app = typer.Typer(help="Data-subject requests and anonymised exports (audited).", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")


def _settings() -> Settings:
    """The settings, or a clear message and exit code 2 when one is missing or unsafe."""
    try:
        return get_settings()
    except ValidationError as exc:
        messages = "; ".join(str(e.get("ctx", {}).get("error", e["msg"])) for e in exc.errors())
        typer.echo(messages, err=True)
        raise typer.Exit(2) from exc


def _required(url: Callable[[Settings], str]) -> str:
    """A URL the command cannot run without, or a clear message and exit code 2."""
    try:
        return url(_settings())
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc


def _database_url() -> str:
    return _required(Settings.require_database_url)


def _mqtt_url() -> str:
    return _required(Settings.require_mqtt_url)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the migrations in sql/ that have not run yet."""
    from wattline.db import create_database
    from wattline.migrate import migrate

    database_url = _database_url()
    if create_database(database_url):
        typer.echo("created the database")
    applied = migrate(database_url)
    typer.echo(f"applied {', '.join(applied)}" if applied else "schema is up to date")


@db_app.command("size-chunks")
def db_size_chunks() -> None:
    """Size the chunks of raw readings to the fleet now (the packing job does it every pass)."""
    from wattline.readings_chunks import describe_sizing, size_chunks

    typer.echo(describe_sizing(size_chunks(_database_url(), get_settings())))


@app.command("demo-seed")
def demo_seed(sites: int = 5, bridges: int = 2, sensors: int = 20) -> None:
    """Migrate, then create the demo portfolio's catalogue and logins (idempotent)."""
    from launcher.demo import seed_demo
    from wattline.db import create_database
    from wattline.migrate import migrate

    database_url = _database_url()
    create_database(database_url)
    migrate(database_url)
    counts = seed_demo(database_url, sites=sites, bridges=bridges, sensors=sensors)
    typer.echo(f"demo portfolio: {counts}")


@app.command()
def gateway(rollups: Annotated[bool, typer.Option(help="Run the rollup worker in-process.")] = True,
            leave: Annotated[bool, typer.Option(
                help="Scale down: leave the shared group for good. Stores what the broker queued for this "
                     "client id, ends its session, exits.")] = False) -> None:
    """Ingest SenML packs from MQTT into TimescaleDB."""
    from ingest.gateway import serve

    settings = _settings()
    configure_logging(settings.log_json)
    _database_url(), _mqtt_url()
    asyncio.run(serve(settings, with_rollups=rollups and not leave, leave=leave))


@app.command()
def simulate(
    sites: int = 3, bridges: int = 2, sensors: int = 20,
    interval: Annotated[float, typer.Option(help="Reporting interval, seconds.")] = 10.0,
    history_hours: Annotated[float, typer.Option(help="Back-fill this many past hours first.")] = 0.0,
    backfill_from: Annotated[datetime | None, typer.Option(help="Back-fill from (UTC) and exit.")] = None,
    backfill_to: Annotated[datetime | None, typer.Option(help="Back-fill until (UTC).")] = None,
    seed_catalogue: Annotated[bool, typer.Option(help="Create the matching catalogue first.")] = False,
    unassigned_every: Annotated[int, typer.Option(help="Leave every Nth circuit unassigned.")] = 0,
    pv_every: Annotated[int, typer.Option(help="Give every Nth site rooftop PV (0: none); the demo uses 2.")] = 0,
    drop_rate: float = 0.0, duplicate_rate: float = 0.0, delay_rate: float = 0.0, malformed_rate: float = 0.0,
    bad_value_rate: float = 0.0, offline_bridge: str | None = None, offline_after_ticks: int = 0,
    offline_for_ticks: int = 0,
    wire: Annotated[str, typer.Option(help="senml (a pack per bridge and tick), sparkplug (Sparkplug B: each "
                                           "bridge an edge node, each sensor a device) or sparkplug-node (each "
                                           "tick's sweep in one NDATA of the edge node's).")] = "senml",
) -> None:
    """Stream simulated clamp readings as SenML packs or Sparkplug B (real time, or back-fill a range)."""
    import psycopg

    from sensor_sim.faults import Faults
    from sensor_sim.fleet import build_fleet
    from sensor_sim.publisher import Report, Simulator
    from sensor_sim.seed import seed_catalogue as seed

    settings = _settings()
    configure_logging(settings.log_json)
    mqtt_url = settings.simulator_mqtt_url or _mqtt_url()
    fleet = build_fleet(sites, bridges, sensors, pv_every=pv_every)
    if seed_catalogue:
        with psycopg.connect(_database_url(), autocommit=True) as conn:
            counts = seed(conn, fleet, unassigned_every=unassigned_every)
        typer.echo(f"catalogue seeded: {counts}")
    faults = Faults(drop_rate, duplicate_rate, delay_rate, 5, malformed_rate, bad_value_rate, offline_bridge,
                    offline_after_ticks, offline_for_ticks)
    try:
        sim = Simulator(fleet, mqtt_url, interval_s=interval, faults=faults, wire=wire)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    report = Report()
    try:
        if backfill_from is not None:
            start = backfill_from.replace(tzinfo=backfill_from.tzinfo or UTC).timestamp()
            end = (backfill_to.replace(tzinfo=backfill_to.tzinfo or UTC).timestamp() if backfill_to else time.time())
            sim.backfill(start, end, report)
        else:
            if history_hours > 0:
                now = (time.time() // interval) * interval
                sim.backfill(now - history_hours * 3600, now, report)
                typer.echo(f"back-filled {report.readings_generated} readings over {history_hours} h")
            sim.run_realtime(report=report)
    except KeyboardInterrupt:
        pass
    finally:
        sim.close()
    typer.echo(f"published {report.packs_published} {'packs' if wire == 'senml' else 'messages'}, "
               f"{report.readings_generated} readings")


@app.command()
def rollup(
    from_: Annotated[datetime, typer.Option("--from", help="Start (UTC).")],
    to: Annotated[datetime, typer.Option("--to", help="End (UTC), exclusive.")],
    site: Annotated[int | None, typer.Option(help="Only this site id.")] = None,
) -> None:
    """Re-compute every rollup of a range from raw readings."""
    import psycopg

    from analytics.worker import RollupEngine

    settings = _settings()
    engine = RollupEngine(settings.reporting_interval_s * settings.gap_factor, horizon_s=settings.late_data_horizon_s)
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        minutes = engine.recompute_range(conn, from_.replace(tzinfo=from_.tzinfo or UTC),
                                         to.replace(tzinfo=to.tzinfo or UTC), site)
    typer.echo(f"re-computed {minutes} minutes of rollups")


@app.command()
def rollups() -> None:
    """Run the rollup worker on its own (when gateways run with --no-rollups)."""
    from analytics.worker import rollup_service

    settings = _settings()
    configure_logging(settings.log_json)
    _database_url()
    run_until_signalled(rollup_service(settings), settings.rollups_health_port)


@app.command()
def alerts(once: Annotated[bool, typer.Option(help="Run one pass and exit.")] = False) -> None:
    """Evaluate alert rules on new data and deliver webhooks, every alerts_period_s."""
    import httpx
    import psycopg

    from alerts.scheduler import alert_service, run_pass

    settings = _settings()
    configure_logging(settings.log_json)
    database_url = _database_url()
    if once:
        with psycopg.connect(database_url, autocommit=True) as conn, httpx.Client(timeout=10.0) as http:
            report = run_pass(conn, settings, http)
        typer.echo(f"rules {report.rules}, raised {report.raised}, cleared {report.cleared}, "
                   f"errors {report.errors}, webhooks delivered {report.webhooks.delivered}")
        raise typer.Exit(1 if report.errors else 0)
    run_until_signalled(alert_service(settings), settings.alerts_health_port)


@app.command()
def exports(once: Annotated[bool, typer.Option(help="Run one pass and exit.")] = False) -> None:
    """Plan and deliver scheduled export jobs (HTTPS, SFTP), every exports_period_s."""
    import psycopg

    from exports.runner import run_pass
    from exports.service import export_service

    settings = _settings()
    configure_logging(settings.log_json)
    database_url = _database_url()
    if once:
        with psycopg.connect(database_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
            report = run_pass(conn, settings)
        typer.echo(f"planned {report.planned}, delivered {report.delivered}, retried {report.retried}, "
                   f"failed {report.failed}")
        raise typer.Exit(1 if report.failed else 0)
    run_until_signalled(export_service(settings), settings.exports_health_port)


@app.command()
def mailbox(
    mail_dir: Annotated[Path, typer.Option("--dir", help="Maildir to keep received messages in.")] = Path(
        ".wattline/mail"),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8025,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: offer and require STARTTLS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM key of --tls-cert.")] = None,
    login: Annotated[str | None, typer.Option(help="Require this login (password: WATTLINE_MAILBOX_PASSWORD).")]
    = None,
    greylist: Annotated[bool, typer.Option(help="Answer each recipient's first attempt with 451.")] = False,
) -> None:
    """A local SMTP server that keeps what it receives in a Maildir (the demo's mail)."""
    import signal
    import threading

    from launcher.localstack.mailbox import LocalMailbox

    configure_logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = LocalMailbox(mail_dir, port, host=host, tls_cert=tls_cert, tls_key=tls_key, login=login,
                          password=os.environ.get("WATTLINE_MAILBOX_PASSWORD"), greylist=greylist)
    typer.echo(f"mailbox: SMTP on {host}:{port}, messages kept in {mail_dir.resolve()}/new")
    server.serve_forever(stop)


def _user_id(conn: Any, user: str) -> int:
    from wattline.privacy import find_user

    found = find_user(conn, user)
    if found is None:
        typer.echo("no such user", err=True)
        raise typer.Exit(1)
    return found


@privacy_app.command("export")
def privacy_export(user: Annotated[str, typer.Option(help="User id or email.")],
                   out: Annotated[str | None, typer.Option(help="Write here instead of stdout.")] = None) -> None:
    """Access request: everything held about a person, as JSON."""
    import orjson
    import psycopg

    from wattline.privacy import export_person

    with psycopg.connect(_database_url(), autocommit=True) as conn:
        data = export_person(conn, _user_id(conn, user), None, channel="cli")
    text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    if out:
        Path(out).write_text(text, encoding="utf-8")
    else:
        typer.echo(text)


@privacy_app.command("erase")
def privacy_erase(user: Annotated[str, typer.Option(help="User id or email.")],
                  yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False) -> None:
    """Erase a person by anonymisation."""
    import psycopg

    from wattline.privacy import PrivacyError, erase

    if not yes:
        typer.echo("erasure cannot be undone: add --yes", err=True)
        raise typer.Exit(2)
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        try:
            done = erase(conn, _user_id(conn, user), None)
        except PrivacyError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from exc
    typer.echo(f"erased user {done.user_id}: {done.api_keys_revoked} key(s) revoked, "
               f"{done.consents_removed} consent record(s) and {done.support_requests_anonymised} support text(s) "
               "removed")


@privacy_app.command("consent")
def privacy_consent(user: Annotated[str, typer.Option(help="User id or email.")],
                    channel: Annotated[str, typer.Option(help="email, sms, phone or post.")],
                    grant: Annotated[bool, typer.Option("--grant/--withdraw")],
                    source: Annotated[str, typer.Option(help="Where the decision was made.")] = "cli") -> None:
    """Record a marketing consent decision (takes effect at once)."""
    import psycopg

    from wattline.privacy import CHANNELS, set_consent

    if channel not in CHANNELS:
        typer.echo(f"channel must be one of {', '.join(CHANNELS)}", err=True)
        raise typer.Exit(2)
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        set_consent(conn, _user_id(conn, user), None, channel, grant, source)
    typer.echo(f"{channel}: {'granted' if grant else 'withdrawn'}")


@privacy_app.command("aggregates")
def privacy_aggregates(
        from_: Annotated[datetime, typer.Option("--from", help="Start (UTC).")],
        to: Annotated[datetime, typer.Option("--to", help="End (UTC), exclusive.")],
        k: Annotated[int, typer.Option(min=5, help="Smallest group published (organisations).")] = 5) -> None:
    """Anonymised benchmark across every organisation on the platform, as JSON."""
    import orjson
    import psycopg

    from wattline.privacy import anonymised_benchmark

    with psycopg.connect(_database_url(), autocommit=True) as conn:
        data = anonymised_benchmark(conn, None, from_.replace(tzinfo=from_.tzinfo or UTC),
                                    to.replace(tzinfo=to.tzinfo or UTC), k)
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


@app.command()
def retention(dry_run: Annotated[bool, typer.Option(help="Report only; remove nothing.")] = False,
              every_hours: Annotated[float, typer.Option(help="Repeat every this many hours (0: once).")] = 0.0,
              ) -> None:
    """Remove data past its retention period, per category, and report what went."""
    import psycopg

    from wattline.retention import Removed, retention_service, run_retention

    settings = _settings()
    configure_logging(settings.log_json)
    url = _database_url()

    def show(report: list[Removed]) -> None:
        for r in report:
            kept = "kept for good" if r.keep_days is None else f"keep {r.keep_days} d"
            verb = "would remove" if dry_run else "removed"
            typer.echo(f"{r.category:<20} {kept:<14} {verb} {r.rows} row(s) ({r.chunks} chunk(s))")

    if every_hours:
        service = retention_service(settings, every_hours, dry_run=dry_run, on_report=show)
        run_until_signalled(service, settings.retention_health_port)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        show(run_retention(conn, settings, dry_run=dry_run))


@app.command()
def packing(once: Annotated[bool, typer.Option(help="One pass, then exit.")] = False,
            before: Annotated[datetime | None, typer.Option(
                help="With --once: pack the days that end by this time instead of the late-data window's.")] = None,
            ) -> None:
    """Move raw readings older than the late-data window into the packed tier (one
    compressed row per sensor and day), and check the packed rows' checksums."""
    import psycopg

    from wattline.packed_tier import (
        PackReport,
        lower_backend_priority,
        nice_this_process,
        pack_due,
        packing_service,
    )

    settings = _settings()
    configure_logging(settings.log_json)

    def show(report: PackReport) -> None:
        for day, count in report.per_day.items():
            typer.echo(f"packed {day}: {count} reading(s)")

    if once:
        window = timedelta(hours=settings.late_window_hours)
        now = None
        if before is not None:
            now, window = before.replace(tzinfo=before.tzinfo or UTC), timedelta(0)
        with psycopg.connect(_database_url(), autocommit=True) as conn:
            nice_this_process()
            lower_backend_priority(conn)
            report = pack_due(conn, window, now=now, sensors_per_batch=settings.packing_sensors_per_batch,
                              duty=settings.packing_duty_cycle)
        show(report)
        typer.echo(f"{report.readings} reading(s) into {report.rows} row(s), {report.chunks_dropped} chunk(s) "
                   f"dropped, in {report.seconds:.1f} s")
        return
    run_until_signalled(packing_service(settings, on_report=show), settings.packing_health_port)


@app.command("broker-sync")
def broker_sync() -> None:
    """Keep the broker's bridge credentials (Mosquitto's dynamic-security plugin) in step with
    the catalogue: issued, rotated and revoked within seconds, the whole set checked now and then."""
    from ingest.broker_security import broker_sync_service

    settings = _settings()
    configure_logging(settings.log_json)
    if not settings.mqtt_admin_url:
        raise typer.BadParameter("WATTLINE_MQTT_ADMIN_URL must be set (the broker's dynamic-security admin client)")
    run_until_signalled(broker_sync_service(settings), settings.broker_sync_health_port)


@app.command("broker-config")
def broker_config(
        out: Annotated[Path, typer.Option(help="The dynamic-security plugin's file to write.")],
        owner: Annotated[str | None, typer.Option(help="uid:gid to own the file (the broker must rewrite it).")] = None,
) -> None:
    """Write a new broker's dynamic-security file with the service clients, whose passwords come from
    WATTLINE_MQTT_ADMIN_URL, WATTLINE_MQTT_URL and WATTLINE_SIMULATOR_MQTT_URL. An existing file is
    left alone: from then on the broker owns it (and `wattline broker-sync` changes it)."""
    from urllib.parse import unquote, urlsplit

    from ingest.broker_security import write_initial_config

    settings = _settings()
    passwords = {}
    for service, url in (("admin", settings.mqtt_admin_url), ("gateway", settings.mqtt_url),
                         ("simulator", settings.simulator_mqtt_url)):
        if url and urlsplit(url).password:
            passwords[service] = unquote(urlsplit(url).password or "")
    uid, _, gid = (owner or "").partition(":")
    if not write_initial_config(out, passwords, owner=(int(uid), int(gid or uid)) if owner else None):
        typer.echo(f"{out} exists: left as it is")
        return
    typer.echo(f"wrote {out} with clients for: {', '.join(passwords) or 'none'}")


@app.command("bridge-claim-code")
def bridge_claim_code(serials: Annotated[list[str], typer.Argument(help="Bridge serials.")]) -> None:
    """Print the claim code for each bridge's label (installers register a bridge with it)."""
    from wattline.catalogue import bridge_claim_code as code

    key = _settings().claim_key
    for serial in serials:
        typer.echo(f"{serial}\t{code(serial, key)}")


@app.command()
def api() -> None:
    """Serve the REST API."""
    import uvicorn

    settings = _settings()
    configure_logging(settings.log_json)
    _database_url()
    uvicorn.run("api.app:create_app", factory=True, host=settings.api_host, port=settings.api_port,
                log_level="warning")


@app.command()
def dashboard() -> None:
    """Serve the Dash dashboard."""
    from dashboard.app import create_dash

    settings = _settings()
    configure_logging(settings.log_json)
    _database_url()
    dash_app = create_dash(settings)
    dash_app.run(host=settings.dashboard_host, port=settings.dashboard_port, debug=False)


@app.command()
def up(
    history_hours: Annotated[float, typer.Option(help="Hours of demo history to back-fill.")] = 6.0,
    sites: int = 5, bridges: int = 2, sensors: int = 20,
) -> None:
    """Install what is missing, start PostgreSQL+TimescaleDB and Mosquitto, then the
    simulator, gateway, API and dashboard. Ctrl-C stops everything."""
    from launcher.up import run_up

    run_up(demo_settings(), history_hours=history_hours, sites=sites, bridges=bridges, sensors=sensors)


def demo_settings() -> Settings:
    """`up` is the demo: its dev secret is allowed, and its webhook receivers may be local.
    Set in the environment, so that every service `up` starts reads the same."""
    os.environ.setdefault("WATTLINE_DEMO", "true")
    os.environ.setdefault("WATTLINE_ALLOW_PRIVATE_DESTINATIONS", "true")
    get_settings.cache_clear()
    return _settings()


if __name__ == "__main__":
    app()
