"""Runtime settings, read from `WATTLINE_*` environment variables (or a `.env` file)."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wattline import PROJECT_ROOT

#: Secrets that ship in examples, templates and old defaults: never accepted outside the demo.
KNOWN_DEFAULT_SECRETS = frozenset({"", "dev-only-change-me", "change-me-in-production", "changethis", "change-me",
                                   "secret", "changeme"})


#: A local day is at most 25 h and starts up to 14 h off UTC: two days keep a whole day's
#: finer rows inside retention.
LATE_DATA_MARGIN_DAYS = 2


class SettingsError(ValueError):
    """A setting a component needs is missing or unsafe; the message names the variable."""


class Settings(BaseSettings):
    """Every setting, from `WATTLINE_*` variables. The launcher resolves the embedded
    services' URLs into `database_url` and `mqtt_url` once; components take `Settings` alone."""

    model_config = SettingsConfigDict(env_prefix="WATTLINE_", env_file=".env", extra="ignore")

    #: External services. Empty means "run the embedded ones under `data_dir`" (`wattline up` only).
    database_url: str = ""
    #: The broker as the gateway signs in to it (mqtt://user:password@host:port).
    mqtt_url: str = ""
    #: The broker's dynamic-security admin client, for `wattline broker-sync`, which applies
    #: bridges' credentials. Empty: bridge credentials are recorded but no broker gets them.
    mqtt_admin_url: str = ""
    #: The simulator's own sign-in (it publishes as every bridge); empty: `mqtt_url`.
    simulator_mqtt_url: str = ""
    #: The local demo (`wattline up`): known default secrets are allowed. Never in production.
    demo: bool = False

    data_dir: Path = PROJECT_ROOT / ".wattline"
    local_pg_port: int = 55432
    local_mqtt_port: int = 11883

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    #: Database connections of one API process (a streamed export holds one while it streams).
    api_pool_size: int = 16
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8050
    #: The dashboard's address as people reach it, for the links in mail (invites, resets).
    #: Never taken from a request's Host header, which a caller chooses. Empty: host and port above.
    public_url: str = ""
    gateway_metrics_port: int = 9108
    #: `wattline up`'s own health: each service it supervises, with its restarts.
    up_health_port: int = 9100

    # Gateway
    #: MQTT v5 shared-subscription group, so that N gateways split the load; empty (the
    #: default): a plain subscription, for one gateway. Mosquitto 2.0 drops what it routes to
    #: a shared group's member that is reconnecting after a broker restart (docs/scaling.md,
    #: `bench fleet`: the packs bridges resent first); a plain subscription keeps all of it.
    mqtt_share_group: str = ""
    mqtt_client_id: str = "wattline-gateway-1"
    #: Read Sparkplug B (`spBv1.0/…`) as its primary host. An edge node's messages must all
    #: reach one reader in order, so they are read on a plain subscription, not the shared
    #: group: with N gateways, turn this on for one. (Two on would store each reading once
    #: still, at twice the work, and both would ask for rebirths.)
    sparkplug_host: bool = True
    #: a batch closes at this many packs, this many payload bytes or this age, whichever comes first
    batch_max_packs: int = 2000
    batch_max_bytes: int = 8 * 1024 * 1024
    batch_max_seconds: float = 0.25
    spool_dir: Path = PROJECT_ROOT / ".wattline" / "spool"
    spool_max_bytes: int = 512 * 1024 * 1024
    #: Packs received and not yet acked (stored): at this many, or at `max_unacked_bytes` of
    #: payload, the gateway stops reading its socket until a batch is stored. Both bound its
    #: memory; at tens of readings a pack the count needs to be high to keep the database busy.
    receive_maximum: int = Field(default=10_000, ge=1, le=65_535)
    max_unacked_bytes: int = 32 * 1024 * 1024
    #: Each bridge may send this many payload bytes a second, after a burst of
    #: `bridge_burst_bytes` (a bridge back from an outage sends its backlog at once). Beyond
    #: it a pack is rejected (`rate_limited`) and kept whole. A bridge of 500 sensors sends
    #: ~3.8 kB/s; the default lets a bridge of 5,000 through at twice its rate.
    bridge_max_bytes_per_s: float = 75_000.0
    bridge_burst_bytes: float = 256 * 1024 * 1024
    #: A broker that has not answered for 1.5 × this long is taken for gone (reconnect).
    mqtt_keepalive_s: int = 30
    #: A database write that has not answered this long is abandoned: the connection is broken
    #: and the batch spooled (a half-open peer never answers, and TCP alone would not tell).
    db_write_timeout_s: float = 30.0

    # Physics
    reporting_interval_s: float = Field(default=10.0, gt=0)
    #: A gap longer than this many reporting intervals is not bridged by integration.
    gap_factor: float = 3.0
    max_clock_skew_s: float = 300.0
    max_reading_age_days: float = 400.0

    # Rollups
    rollup_period_s: float = 2.0
    #: a real-time minute's rollup is computed once, this long after the minute closes (its
    #: late packs come first), not at every gateway batch that touches it; older minutes
    #: (late data, a spool replayed) are due at once
    rollup_settle_s: float = 15.0
    #: a real-time minute's 15-minute, hourly and daily rollups and its day's price wait for
    #: its 15-minute interval to close, plus `rollup_coarse_delay_s`, and are then done once
    #: for the interval (its 1-minute rollups, and so the rollup lag, do not wait); false:
    #: with every minute
    rollup_defer_coarse: bool = True
    rollup_coarse_delay_s: float = Field(default=45.0, ge=0)
    #: the gateway queues a minute's work per shard of sites (site id modulo this), and a
    #: worker pass claims up to `rollup_shards_per_pass` of them: several workers split a
    #: minute. Keep it above the number of workers times shards per pass.
    rollup_queue_shards: int = Field(default=16, ge=1, le=1024)
    rollup_shards_per_pass: int = Field(default=4, ge=1)

    # Alerts
    alerts_period_s: float = 30.0
    #: a new rule's first evaluation looks this far back
    alerts_first_lookback_h: float = 24.0
    #: the newest minutes are left this long to settle (late packs, rollup lag)
    alerts_settle_s: float = 120.0
    alerts_health_port: int = 9109
    #: Let tenants' webhooks and exports reach loopback and private addresses. Off in
    #: production (SSRF); the demo and the tests turn it on for receivers on this machine.
    allow_private_destinations: bool = False
    #: Also trust this CA (PEM) for HTTPS exports, for receivers with a private certificate.
    outbound_ca_file: Path | None = None

    # Export jobs
    exports_period_s: float = 60.0
    exports_health_port: int = 9112

    # Mail: the outbox is sent through this SMTP server by the alert service. No host: mail
    # waits in the outbox (`wattline up` runs a local mailbox and sets it).
    smtp_host: str | None = None
    smtp_port: int = 25
    #: Upgrade the connection with STARTTLS before anything else (and refuse a server without it).
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str = Field(default="", repr=False)
    #: Trust this CA (PEM) for STARTTLS, for a relay with a private certificate; else the system's.
    smtp_ca_file: Path | None = None
    smtp_timeout_s: float = 10.0
    mail_from: str = "Wattline <noreply@wattline.example>"
    #: The local mailbox of `wattline up` (kept in data_dir/mail, a Maildir).
    local_smtp_port: int = 8025
    rollups_health_port: int = 9110
    retention_health_port: int = 9111
    packing_health_port: int = 9113
    #: The broker sync looks for issued, rotated or revoked bridge credentials this often,
    #: and compares the broker's whole set with the catalogue's every `broker_reconcile_minutes`.
    broker_sync_every_s: float = 2.0
    broker_reconcile_minutes: float = 10.0
    broker_sync_health_port: int = 9114
    #: A bridge that connects more often than this in a minute is paused (its sign-in
    #: refused) for `bridge_pause_s`, twice as long each time it goes on within the hour
    #: (ingest/reconnect_guard.py). A broker restart costs each bridge one connection.
    bridge_max_connects_per_minute: int = 6
    bridge_pause_s: float = 60.0

    # The packed tier of raw readings (`wattline packing`): days that ended more than the
    # late-data window ago move into one compressed row per sensor and day. Late readings
    # for a packed day are merged in, so the window trades ingest work for disk, never data.
    late_window_hours: float = Field(default=48.0, ge=1.0)
    packing_every_minutes: float = Field(default=15.0, gt=0)
    #: Sensors whose day moves in one transaction (it holds that day's lock meanwhile).
    packing_sensors_per_batch: int = Field(default=50, ge=1)
    #: The share of time the job works; it rests the remainder between batches, so ingest
    #: keeps the cores. At 0.15 it still packs ~80,000 readings/s, a day of 800,000 sensors
    #: (at 10 s) in under a day; raise it for a bigger fleet on one database.
    packing_duty_cycle: float = Field(default=0.15, gt=0, le=1)
    #: The width of a `readings` chunk in minutes (it must divide a day). Unset, it follows the
    #: fleet: the widest whose index fits in a quarter of shared_buffers (readings_chunks.py).
    readings_chunk_minutes: int | None = Field(default=None, ge=1, le=1440)

    # Retention (days; None keeps for good). Raw and 1-minute data about 3 months, as
    # PowerRadar does; coarser rollups kept. Enforced by `wattline retention`.
    retention_raw_days: int | None = 93
    retention_1m_days: int | None = 93
    retention_15m_days: int | None = None
    retention_1h_days: int | None = None
    retention_1d_days: int | None = None
    retention_rejected_days: int | None = 30
    retention_audit_days: int | None = 6 * 365
    retention_support_days: int | None = 2 * 365  # after a request is closed
    retention_webhook_days: int | None = 90
    retention_mail_days: int | None = 30  # sent or given-up mail, after it was queued
    retention_export_runs_days: int | None = 400  # a job's history of runs
    #: login sessions, this long after they expired; failed sign-in records, after the last failure
    retention_sessions_days: int | None = 1

    #: Signs the dashboard's session cookies. Required outside the demo.
    secret_key: str = Field(default="", repr=False)
    #: The key bridges' claim codes are derived from (printed on their labels); empty: derived
    #: from `secret_key`. Share it with whoever labels the bridges, and only with them.
    bridge_claim_key: str = Field(default="", repr=False)
    log_json: bool = False

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Self:
        if not self.demo and (self.secret_key in KNOWN_DEFAULT_SECRETS or len(self.secret_key) < 16):
            raise SettingsError(
                "WATTLINE_SECRET_KEY is unset, too short or a known default: set at least 16 random characters "
                "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))'), or WATTLINE_DEMO=true for the "
                "local demo only")
        return self

    @model_validator(mode="after")
    def _chunk_divides_a_day(self) -> Self:
        # The packing job drops a packed day's chunks whole; a width that straddles midnight
        # would leave rows to delete one by one.
        if self.readings_chunk_minutes is not None and 1440 % self.readings_chunk_minutes:
            raise SettingsError(f"WATTLINE_READINGS_CHUNK_MINUTES={self.readings_chunk_minutes} must divide a day "
                                "(1440 minutes): 1, 2, 5, 10, 15, 30, 60, ..., 1440")
        return self

    @property
    def late_data_horizon_s(self) -> float:
        """How old a reading may be and still be stored and rolled up.

        Within `max_reading_age_days`, and LATE_DATA_MARGIN_DAYS inside the retention of raw
        readings and 1-minute rollups: a late reading (or a re-queued history) never rebuilds
        an hour or a local day whose finer rows retention has already dropped."""
        days = [self.max_reading_age_days] + [d - LATE_DATA_MARGIN_DAYS for d in
                                              (self.retention_raw_days, self.retention_1m_days) if d is not None]
        return max(0.0, min(days)) * 86400.0

    @property
    def claim_key(self) -> str:
        """The key of bridge claim codes (`bridge_claim_key`, else one derived from `secret_key`)."""
        if self.bridge_claim_key:
            return self.bridge_claim_key
        return hmac.new(self.secret_key.encode(), b"wattline bridge claim codes", hashlib.sha256).hexdigest()

    @property
    def bridge_credential_key(self) -> bytes:
        """The key bridges' MQTT passwords are derived under (wattline/bridge_credentials.py)."""
        from wattline.bridge_credentials import credential_key

        return credential_key(self.secret_key)

    @property
    def dashboard_url(self) -> str:
        """Where mailed links point: `public_url`, else the dashboard's own address."""
        return (self.public_url or f"http://{self.dashboard_host}:{self.dashboard_port}").rstrip("/")

    def require_database_url(self) -> str:
        """The database URL, or a SettingsError naming the variable (embedded: only `wattline up`)."""
        if not self.database_url:
            raise SettingsError("WATTLINE_DATABASE_URL must be set (or use `wattline up`)")
        return self.database_url

    def require_mqtt_url(self) -> str:
        """The broker URL, or a SettingsError naming the variable."""
        if not self.mqtt_url:
            raise SettingsError("WATTLINE_MQTT_URL must be set (or use `wattline up`)")
        return self.mqtt_url


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
