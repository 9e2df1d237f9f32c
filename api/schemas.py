"""Request and response bodies, with examples for the OpenAPI document."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from alerts.rules import Recipients, RuleParams, Schedule, Severity
from wattline.assignments import MAX_CT_RATING_A
from wattline.domain import Connection, Resolution, Role
from wattline.generation import Flow

FLOW_HELP = ("consumption, or generation for a circuit or device that generates (rooftop PV): a clamp reads "
             "magnitude only, so the direction is this setting. No clamp may sit above generation.")

Serial = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", examples=["CT0000000001"])


class Login(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "demo@wattline.example", "password": "wattline-demo"}]}
    )
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    code: str | None = Field(default=None, max_length=32,
                             description="the 6-digit two-factor code (or a recovery code), where the account has one")


class Token(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "token": "wl_AbCd1234.q9V…",
                    "prefix": "wl_AbCd1234",
                    "expires_at": "2026-11-24T07:00:00Z",
                    "scopes": ["read", "write"],
                }
            ]
        }
    )

    token: str = Field(examples=["wl_AbCd1234.s3cr3t"])
    prefix: str
    expires_at: datetime | None
    scopes: list[str]


class KeyRequest(BaseModel):
    name: str = Field("", max_length=100, examples=["BMS integration"])
    scopes: list[Literal["read", "write", "commission", "admin"]] = Field(min_length=1, examples=[["read"]])
    ttl_days: int | None = Field(None, ge=1, le=3650, examples=[365])


class KeyInfo(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 7,
                    "prefix": "wl_AbCd1234",
                    "name": "BMS integration",
                    "scopes": ["read"],
                    "expires_at": None,
                    "revoked_at": None,
                    "last_used_at": "2026-11-23T08:00:00Z",
                    "created_at": "2026-11-01T09:30:00Z",
                }
            ]
        }
    )

    id: int
    prefix: str
    name: str
    scopes: list[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime


class Me(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": 3,
                    "role": "facility_manager",
                    "reseller_id": None,
                    "customer_id": 1,
                    "scopes": ["read", "write"],
                }
            ]
        }
    )

    user_id: int
    role: Role
    reseller_id: int | None
    customer_id: int | None
    scopes: list[str]


class CustomerIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["Acme Foods plc"])
    billing_email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)


class Customer(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"id": 1, "name": "Acme Foods plc", "reseller_id": 1, "created_at": "2026-01-05T10:00:00Z"}]
        }
    )

    id: int
    name: str
    reseller_id: int
    created_at: datetime
    billing_email: str | None = Field(None, description="admins only; reading it is audited")
    card_last4: str | None = Field(None, description="admins only; the card itself is never held")


#: A local time of day: "00:00" to "24:00".
HourMinute = Annotated[str, Field(pattern=r"^(?:[01]\d|2[0-3]):[0-5]\d$|^24:00$", examples=["07:00"])]
#: Per weekday, [opening, closing] in the site's local time; a day left out is closed.
OpeningHours = dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], tuple[HourMinute, HourMinute]]


class SiteIn(BaseModel):
    customer_id: int | None = Field(None, description="Required for reseller users.")
    name: str = Field(min_length=1, max_length=200, examples=["Leeds depot"])
    timezone: str = Field("UTC", max_length=64, examples=["Europe/London"])
    country: str = Field("GB", pattern=r"^[A-Z]{2}$")
    floor_area_m2: float | None = Field(None, gt=0, lt=10_000_000)
    opening_hours: OpeningHours = Field(
        default_factory=dict, examples=[{"mon": ["07:00", "19:00"]}]
    )


class Site(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "customer_id": 1,
                    "name": "Leeds depot",
                    "timezone": "Europe/London",
                    "country": "GB",
                    "floor_area_m2": 1800.0,
                    "opening_hours": {"mon": ["07:00", "19:00"]},
                }
            ]
        }
    )

    id: int
    customer_id: int
    name: str
    timezone: str
    country: str
    floor_area_m2: float | None
    opening_hours: dict[str, list[str]]
    latitude: float | None = None
    longitude: float | None = None
    hdd_base_c: float = 15.5
    cdd_base_c: float = 22.0


class NodeIn(BaseModel):
    parent_id: int
    kind: Literal["panel", "circuit", "device"]
    name: str = Field(min_length=1, max_length=200, examples=["Chiller 2"])
    external_ref: str | None = Field(None, max_length=100, examples=["DB2-C14"])
    nominal_voltage_v: float | None = Field(None, gt=0, lt=100_000, examples=[400])
    power_factor: float | None = Field(None, gt=0, le=1, examples=[0.92])
    connection: Connection | None = None
    asset_type: str | None = Field(None, max_length=50, examples=["refrigeration"])
    flow: Flow = Field("consumption", description=FLOW_HELP)


class NodePatch(BaseModel):
    parent_id: int | None = Field(None, description="Move the node under another parent.")
    name: str | None = Field(None, min_length=1, max_length=200)
    nominal_voltage_v: float | None = Field(None, gt=0, lt=100_000)
    power_factor: float | None = Field(None, gt=0, le=1)
    flow: Flow | None = Field(None, description=FLOW_HELP + " A change re-sums the node's history.")


class Node(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 12,
                    "parent_id": 4,
                    "kind": "circuit",
                    "name": "Chiller 2",
                    "external_ref": "DB2-C14",
                    "depth": 3,
                    "sensors": 3,
                }
            ]
        }
    )

    id: int
    parent_id: int | None
    kind: str
    name: str
    external_ref: str | None
    flow: Flow = "consumption"
    depth: int | None = None
    sensors: int | None = None


class EnergyBucket(BaseModel):
    """One bucket of a site's energy balance, in Wh: what it consumed and generated, drew
    from the grid (import) and gave to it (export), and used of its own generation."""

    bucket: datetime
    consumption_wh: float
    generation_wh: float
    import_wh: float
    export_wh: float
    self_consumption_wh: float
    coverage: float


class EnergyBalance(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "site_id": 1, "resolution": "1h",
        "totals": {"consumption_wh": 41200.0, "generation_wh": 18500.0, "import_wh": 27100.0, "export_wh": 4400.0,
                   "self_consumption_wh": 14100.0},
        "buckets": [{"bucket": "2026-06-01T11:00:00Z", "consumption_wh": 3900.0, "generation_wh": 5200.0,
                     "import_wh": 0.0, "export_wh": 1300.0, "self_consumption_wh": 3900.0, "coverage": 1.0}]}]})

    site_id: int
    resolution: Resolution
    totals: dict[str, float]
    buckets: list[EnergyBucket]


class BridgeIn(BaseModel):
    serial: str = Serial
    name: str = Field("", max_length=200)
    claim_code: str = Field(max_length=20, pattern=r"^[A-Za-z2-7 -]+$",
                            description="from the bridge's label: proof that you hold it", examples=["K3QX-7MZA-PL2C"])


class MqttCredential(BaseModel):
    """What the bridge is configured with. The password is shown once: rotate to get another."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "username": "BR-S000-00", "password": "dq0Zr8oS1c3Jx7n4YtqGvB2kLmWp9aEe", "client_id": "BR-S000-00",
        "senml_topic": "wattline/v1/bridges/BR-S000-00/senml", "status_topic": "wattline/v1/bridges/BR-S000-00/status",
        "generation": 1}]})

    username: str
    password: str
    client_id: str = Field(description="the broker accepts these credentials under this client id only")
    senml_topic: str
    status_topic: str
    generation: int = Field(description="1 at registration, +1 at each rotation")


class BridgeRegistered(BaseModel):
    id: int
    mqtt: MqttCredential | None = Field(
        description="issued at the bridge's first registration; null when it already had one")


class CredentialState(BaseModel):
    username: str
    generation: int
    issued_at: datetime
    revoked_at: datetime | None
    applied: bool = Field(description="the broker holds this state (it is applied within seconds)")
    last_error: str | None
    paused_until: datetime | None = Field(
        description="the broker refuses the bridge until then: it reconnected in a tight loop")
    pauses: int = Field(description="how often the bridge has been paused for reconnecting in a tight loop")


class Bridge(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 2,
                    "serial": "BR-S000-00",
                    "name": "Plant room",
                    "site_id": 1,
                    "online": True,
                    "status_changed_at": "2026-11-23T07:59:00Z",
                }
            ]
        }
    )

    id: int
    serial: str
    name: str
    site_id: int
    online: bool | None
    status_changed_at: datetime | None


class SensorInfo(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 40,
                    "serial": "CT0000000001",
                    "bridge_id": 2,
                    "bridge_serial": "BR-S000-00",
                    "node_id": None,
                    "node_name": None,
                    "phase": None,
                    "ct_rating_a": None,
                    "assigned_at": None,
                    "first_seen_at": "2026-11-20T10:00:00Z",
                    "last_seen_at": "2026-11-23T08:00:00Z",
                    "last_current_a": 12.5,
                    "last_rssi_dbw": -72.0,
                    "reports_power": False,
                }
            ]
        }
    )

    id: int
    serial: str
    bridge_id: int
    bridge_serial: str
    node_id: int | None
    node_name: str | None
    phase: int | None
    ct_rating_a: float | None
    assigned_at: datetime | None
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    last_current_a: float | None
    last_rssi_dbw: float | None
    reports_power: bool = Field(description="A meter that reports signed power (SenML `power`, W), not a clamp")


class MeterSetting(BaseModel):
    """Whether the sensor is a meter that sends its real power with its sign (SenML `power`, W:
    positive into the node's loads, negative back out). Its node then nets by the sign, and it
    may sit above generation; a clamp cannot."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"reports_power": True}]})
    reports_power: bool


class Correction(BaseModel):
    """Where the sensor is, and always was (its history moves)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"node_id": 12, "phase": 1, "ct_rating_a": 100}]})
    node_id: int
    phase: int = Field(ge=1, le=3)
    ct_rating_a: float = Field(gt=0, le=MAX_CT_RATING_A)


class Assignment(Correction):
    """Where a discovered sensor is; `since`: from when it counts there (default: all it measured)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"node_id": 12, "phase": 1, "ct_rating_a": 100}]})
    since: datetime | None = None


class Move(Correction):
    """Where the clamp went, and when (default: now); earlier readings stay where they were."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"node_id": 14, "phase": 2, "ct_rating_a": 100, "at": "2026-11-23T10:15:00Z"}]})
    at: datetime | None = None


class Replacement(BaseModel):
    """The new sensor that took a failed one's place, and when (default: now)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"new_serial": "CT0000000099",
                                                               "at": "2026-11-23T10:15:00Z"}]})
    new_serial: str = Field(min_length=1, max_length=64)
    at: datetime | None = None


class AssignmentSpan(BaseModel):
    """A span of a sensor on a node's phase; `valid_from` null: since its first reading,
    `valid_to` null: still there."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": 7, "serial": "CT0000000001", "node_id": 12, "phase": 1, "ct_rating_a": 100.0,
         "valid_from": None, "valid_to": "2026-11-23T10:15:00Z", "reason": "assign", "assigned_by": 3,
         "assigned_at": "2026-11-20T09:00:00Z"}]})
    id: int
    serial: str
    node_id: int
    phase: int
    ct_rating_a: float
    valid_from: datetime | None
    valid_to: datetime | None
    reason: Literal["assign", "correct", "move", "replace"]
    assigned_by: int | None
    assigned_at: datetime


class SensorCheck(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "serial": "CT0000000001",
                    "state": "live",
                    "last_seen_at": "2026-11-23T08:00:00Z",
                    "last_current_a": 12.5,
                    "ct_rating_a": 100.0,
                    "detail": "reporting",
                }
            ]
        }
    )

    serial: str
    state: Literal["live", "silent", "implausible", "never_seen"]
    last_seen_at: datetime | None
    last_current_a: float | None
    ct_rating_a: float | None
    detail: str


class BridgeCheck(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"serial": "BR-S000-00", "online": True, "status_changed_at": "2026-11-23T07:59:00Z"}]
        }
    )

    serial: str
    online: bool | None
    status_changed_at: datetime | None


class CommissioningReport(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"site_id": 1, "mapped": 36, "discovered": 4, "live": 35, "silent": 1, "implausible": 0, "sensors": []}
            ]
        }
    )

    site_id: int
    mapped: int
    discovered: int
    live: int
    silent: int
    implausible: int
    sensors: list[SensorCheck]


class LiveCheck(BaseModel):
    """A sensor now, as the installer's live check shows it: where, what, and what looks wrong."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "serial": "CT0000000001", "bridge_id": 2, "node_id": 12, "node_name": "Motor", "phase": 1,
        "ct_rating_a": 50.0, "state": "live", "last_seen_at": "2026-11-23T08:00:00Z", "current_a": 61.2,
        "power_w": 12717.0, "rssi_dbw": -71.0, "flags": ["61.2 A is above the 50 A rating: check the CT"]}]})
    serial: str
    bridge_id: int
    node_id: int | None
    node_name: str | None
    phase: int | None
    ct_rating_a: float | None
    state: Literal["discovered", "live", "silent", "implausible", "never_seen"]
    last_seen_at: datetime | None
    current_a: float | None
    power_w: float | None
    rssi_dbw: float | None
    flags: list[str]


class CommissionedIn(BaseModel):
    """Mark the site commissioned (true), or open it again (false)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"commissioned": True}]})
    commissioned: bool


class Commissioned(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"commissioned_at": "2026-11-23T10:00:00Z",
                                                               "commissioned_by": "Ada Installer"}]})
    commissioned_at: datetime | None
    commissioned_by: str | None


class TariffBandIn(BaseModel):
    name: str = Field(min_length=1, max_length=50, examples=["day"])
    rate_minor_per_kwh: Decimal = Field(ge=0, max_digits=14, decimal_places=4, examples=["28.62"])
    day_types: list[Literal["weekday", "weekend", "holiday"]] = Field(min_length=1)
    start: time
    end: time


class TariffIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    currency: str = Field(pattern=r"^[A-Z]{3}$", examples=["GBP"])
    valid_from: datetime
    standing_charge_minor_per_day: Decimal = Field(Decimal(0), ge=0, max_digits=14, decimal_places=4)
    demand_charge_minor_per_kw: Decimal = Field(Decimal(0), ge=0, max_digits=14, decimal_places=4)
    demand_interval_minutes: Literal[15, 30] = 30
    vat_rate: Decimal = Field(Decimal(0), ge=0, lt=1, max_digits=6, decimal_places=4)
    export_rate_minor_per_kwh: Decimal = Field(Decimal(0), ge=0, max_digits=14, decimal_places=4, examples=["15.00"],
                                               description="Paid per kWh given to the grid (a site with "
                                                           "generation); credited after VAT.")
    bands: list[TariffBandIn] = Field(min_length=1)


class Usage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "node_id": 4,
                    "parent_id": 2,
                    "kind": "panel",
                    "name": "Board 1",
                    "energy_wh": 74012.5,
                    "unmonitored_wh": None,
                    "max_power_w": 18250.0,
                }
            ]
        }
    )

    node_id: int
    parent_id: int | None
    kind: str
    name: str
    energy_wh: float
    unmonitored_wh: float | None
    max_power_w: float | None


class Created(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"id": 42}]})

    id: int


class CustomerPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    billing_email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)


class SitePatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    timezone: str | None = Field(None, max_length=64)
    floor_area_m2: float | None = Field(None, gt=0, lt=10_000_000)
    opening_hours: OpeningHours | None = None
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)
    hdd_base_c: float | None = Field(None, ge=-20, le=40, description="heating degree-day base, °C (default 15.5)")
    cdd_base_c: float | None = Field(None, ge=-20, le=40, description="cooling degree-day base, °C (default 22)")


class BridgePatch(BaseModel):
    name: str = Field(max_length=200)


# -- alerts -------------------------------------------------------------------------------------
class AlertRuleIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "Night heating left on", "node_id": 12,
         "params": {"kind": "threshold", "above_w": 5000, "hold_minutes": 30, "hours": ["20:00", "24:00"]}},
        {"name": "Silent clamps", "params": {"kind": "sensor_offline", "intervals": 6}},
        {"name": "November budget", "params": {"kind": "budget", "cap": "1500.00"}}]})

    name: str = Field(min_length=1, max_length=200)
    node_id: int | None = Field(None, description="a node of the site; none: the whole site")
    virtual_meter_id: int | None = Field(None, description="or a virtual meter of the site's customer (threshold, "
                                         "after_hours, anomaly, cycling, base_load)")
    enabled: bool = True
    params: RuleParams
    severity: Severity | None = Field(None, description="default: warning (critical for a bridge offline)")
    schedule: Schedule | None = Field(None, description="when the rule is armed, local time; none: always")
    recipients: Recipients = Field(default_factory=Recipients)


class AlertRulePatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    enabled: bool | None = None
    params: RuleParams | None = None
    severity: Severity | None = None
    schedule: Schedule | None = Field(None, description="null: always armed; absent: unchanged")
    recipients: Recipients | None = None


class BacktestIn(BaseModel):
    node_id: int | None = None
    virtual_meter_id: int | None = None
    params: RuleParams
    severity: Severity = "warning"
    schedule: Schedule | None = None


class BacktestEpisode(BaseModel):
    subject: str
    start: datetime
    end: datetime | None = Field(description="null: still holding at the end of the window")
    message: str
    detail: dict[str, Any]


class BacktestOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    t_from: datetime = Field(alias="from")
    t_to: datetime = Field(alias="to")
    present_only: bool = Field(description="the kind judges the present only: this is what holds now")
    episodes: list[BacktestEpisode]


class AlertRule(BaseModel):
    id: int
    site_id: int
    node_id: int | None
    virtual_meter_id: int | None = None
    kind: str
    name: str
    params: dict[str, object]
    enabled: bool
    evaluated_to: datetime | None
    created_at: datetime
    last_error: str | None = Field(None, description="why the last evaluation failed; null once one succeeds")
    failing_since: datetime | None = None
    severity: Severity = "warning"
    schedule: Schedule | None = None
    recipients: Recipients = Field(default_factory=Recipients)


class Alert(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 31, "rule_id": 4, "rule_name": "Silent clamps", "kind": "sensor_offline", "site_id": 1,
        "site_name": "Site 000", "node_id": None, "subject": "CT0000000004", "severity": "warning",
        "message": "sensor CT0000000004 silent since 2026-11-24T08:10:00+00:00", "detail": {},
        "started_at": "2026-11-24T08:10:00Z", "cleared_at": None, "acknowledged_at": None, "resolved_at": None,
        "state": "open", "created_at": "2026-11-24T08:12:30Z"}]})

    id: int
    rule_id: int
    rule_name: str
    kind: str
    site_id: int
    site_name: str
    node_id: int | None
    subject: str
    severity: Literal["info", "warning", "critical"]
    message: str
    detail: dict[str, object]
    started_at: datetime = Field(description="data time the condition began")
    cleared_at: datetime | None = Field(description="data time it ended; null while it goes on")
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    state: Literal["open", "acknowledged", "resolved"]
    created_at: datetime


class WebhookIn(BaseModel):
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000, examples=["https://example.com/hooks/wattline"])


class Webhook(BaseModel):
    id: int
    customer_id: int
    url: str
    enabled: bool
    created_at: datetime
    last_error: str | None = Field(None, description="why the last attempt failed; null once one succeeds")
    failing_since: datetime | None = None
    suspended_at: datetime | None = Field(None, description="no attempts while suspended; resume to retry")
    suspended_reason: str | None = None


class WebhookCreated(Webhook):
    secret: str = Field(description="the HMAC key: shown once, keep it safe")


class Delivery(BaseModel):
    id: int
    episode_id: int
    event: Literal["raised", "cleared"]
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    failed_at: datetime | None
    last_error: str | None
    created_at: datetime


class SiteBenchmark(BaseModel):
    site_id: int
    site_name: str
    energy_kwh: float
    floor_area_m2: float | None
    kwh_per_m2: float | None
    opening_hours: float = Field(description="hours the site was open in the range")
    kwh_per_opening_hour: float | None
    rank_per_m2: int | None = Field(description="1 = least energy per m² among the customer's sites")
    hdd: float = Field(description="heating degree days of the range's whole days, at the site's base")
    cdd: float = Field(description="cooling degree days of the range's whole days, at the site's base")
    kwh_weather_normalised: float | None = Field(
        description="energy as if the site had had the reference weather (the day-by-day mean temperature of the "
                    "customer's sites), by the site's baseline; null without a baseline or a day's temperature")
    kwh_per_m2_weather_normalised: float | None
    kg_co2e: float | None = Field(description="at the site's emission factors (GET /v1/sites/{id}/emission-factor), "
                                              "over the same hourly buckets; null: some energy has no factor")
    kg_co2e_per_m2: float | None


class SiteAccess(BaseModel):
    """The only sites a user may see; an empty list: every site of the organisation."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"site_ids": [3, 7]}]})
    site_ids: list[int] = Field(max_length=10_000)


# -- privacy ------------------------------------------------------------------------------------
class ContactPatch(BaseModel):
    """Rectification: only the fields sent change. `phone: null` clears the phone number."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"full_name": "Ada Lovelace",
                                                                             "phone": "+44 20 7946 0000"}]})
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)
    full_name: str | None = Field(None, min_length=1, max_length=200)
    phone: str | None = Field(None, pattern=r"^\+?[0-9 ()-]{5,30}$")


class ConsentIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"channel": "email", "granted": False}]})
    channel: Literal["email", "sms", "phone", "post"]
    granted: bool
    source: str = Field("api", min_length=1, max_length=100, description="where the decision was made")


class ConsentState(BaseModel):
    granted: bool
    source: str | None
    at: datetime | None


class ErasureDone(BaseModel):
    user_id: int
    api_keys_revoked: int
    consents_removed: int
    support_requests_anonymised: int


class SupportRequestIn(BaseModel):
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(max_length=20_000)


# -- people and access --------------------------------------------------------------------------
class Person(BaseModel):
    id: int
    email: str
    full_name: str
    role: Role
    status: Literal["invited", "active", "disabled", "erased"]
    site_ids: list[int] = Field(description="the only sites this person sees; empty: the whole organisation")
    two_factor: bool
    sessions: int
    created_at: datetime
    last_sign_in_at: datetime | None


class InviteIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"email": "ops@acme.example", "full_name": "Sam Ops", "role": "facility_manager", "site_ids": []}]})
    email: str = Field(max_length=320)
    full_name: str = Field(default="", max_length=200)
    role: Role
    site_ids: list[int] = Field(default_factory=list, max_length=1000)
    customer_id: int | None = Field(default=None, description="a reseller admin invites into one of its customers")


class AccessIn(BaseModel):
    role: Role
    site_ids: list[int] = Field(default_factory=list, max_length=1000,
                                description="empty: the whole organisation")


class Policy(BaseModel):
    name: str
    allowed_email_domains: list[str]
    require_totp: bool


class PolicyIn(BaseModel):
    allowed_email_domains: list[str] = Field(default_factory=list, max_length=100,
                                             description="empty: any domain")
    require_totp: bool = False


class SessionInfo(BaseModel):
    id: int
    prefix: str
    client: str | None
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime


class ResetRequest(BaseModel):
    email: str = Field(max_length=320)


class LinkPassword(BaseModel):
    token: str = Field(min_length=16, max_length=128, description="the token at the end of the emailed link")
    password: str = Field(max_length=1024)


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class TwoFactorEnrolment(BaseModel):
    secret: str
    uri: str = Field(description="otpauth:// URI for an authenticator app")
    qr_data_uri: str = Field(description="the URI as a QR code, an SVG image as a data: URI")


class CodeIn(BaseModel):
    code: str = Field(max_length=32)


class RecoveryCodes(BaseModel):
    recovery_codes: list[str] = Field(description="shown once; each works once")


class TwoFactorState(BaseModel):
    enabled: bool
    enabled_at: datetime | None
    recovery_codes_left: int


class ProgressOut(BaseModel):
    done: int
    total: int
    finished: bool
    eta_s: float | None = Field(description="seconds left at the pace so far; null before anything is done")
    started_at: datetime | None


# -- the tariff editor ---------------------------------------------------------------------------
class DraftSaved(BaseModel):
    id: int
    problems: list[str] = Field(description="slots not priced exactly once; empty when it can be published")


class TariffDraft(BaseModel):
    id: int
    body: TariffIn
    problems: list[str]
    created_at: datetime
    updated_at: datetime


class PreviewLine(BaseModel):
    label: str
    kind: str
    quantity: Decimal
    actual_minor: Decimal | None
    draft_minor: Decimal | None


class TariffPreview(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    t_from: datetime = Field(alias="from")
    t_to: datetime = Field(alias="to")
    currency: str
    actual_currency: str | None
    energy_kwh: float
    lines: list[PreviewLine]
    actual_total_minor: Decimal | None
    draft_total_minor: Decimal


class CorrectionIn(BaseModel):
    reason: str = Field(min_length=1, max_length=1000, examples=["day rate keyed as 82.6 instead of 28.6"])


class TariffCorrection(BaseModel):
    id: int
    progress: ProgressOut | None = Field(None, description="the re-pricing: days priced again of those dropped")
    tariff_id: int | None
    repriced_from: datetime
    reason: str | None = None
    days_repriced: int
    superseded: list[dict[str, Any]]
    corrected_at: datetime | None = None
    corrected_by: str | None = None


# -- notification preferences ----------------------------------------------------------------------
def _no_offset(t: time) -> time:
    if t.tzinfo is not None:
        raise ValueError("quiet hours are local wall-clock times in `timezone`: give them without an offset")
    return t


#: A wall-clock time in the preference's own zone, "HH:MM" or "HH:MM:SS" (an RFC 3339
#: `time` would demand an offset, which a local time does not have).
LocalTime = Annotated[time, AfterValidator(_no_offset), PlainSerializer(time.isoformat, return_type=str),
                      WithJsonSchema({"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?$",
                                      "examples": ["22:00"]})]


class NotificationPreferencesIn(BaseModel):
    alert_email: Literal["immediate", "digest", "off"] = "immediate"
    digest_hour: int = Field(7, ge=0, le=23, description="local hour the daily digest goes out")
    quiet_start: LocalTime | None = Field(None, description="immediate alert mail waits out quiet hours (local)")
    quiet_end: LocalTime | None = None
    timezone: str = Field("UTC", max_length=64, examples=["Europe/London"])
    report_email: bool = True


class NotificationPreferences(NotificationPreferencesIn):
    unsubscribed: list[str] = Field(description="categories this address unsubscribed from by link")


# -- scheduled export jobs -----------------------------------------------------------------------
class ExportJobIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "Nightly to BI", "resolution": "15m", "format": "csv", "schedule": "daily", "destination": "https",
         "url": "https://bi.example.com/wattline", "include_catalog": True},
        {"name": "Monthly to SFTP", "resolution": "1h", "format": "json", "schedule": "monthly",
         "destination": "sftp", "sftp_host": "sftp.example.com", "sftp_username": "wattline", "sftp_path": "in"}]})
    name: str = Field(min_length=1, max_length=200)
    site_ids: list[int] = Field(default_factory=list, max_length=1000, description="empty: every site")
    node_ids: list[int] = Field(default_factory=list, max_length=10000, description="empty: every node")
    resolution: Literal["15m", "1h", "1d"] = "15m"
    format: Literal["csv", "json"] = "csv"
    schedule: Literal["daily", "weekly", "monthly"] = "daily"
    include_catalog: bool = Field(False, description="also deliver the hierarchy with node ids each period")
    include_emissions: bool = Field(False, description="also deliver each site's CO2e per node and local day")
    destination: Literal["https", "sftp"]
    url: str | None = Field(None, max_length=2000)
    sftp_host: str | None = Field(None, max_length=253)
    sftp_port: int = Field(22, ge=1, le=65535)
    sftp_username: str | None = Field(None, max_length=100)
    sftp_path: str = Field(".", max_length=500)
    sftp_host_key: str | None = Field(None, max_length=200, description="SHA256:… fingerprint; none: pinned on "
                                                                         "first connection")


class ExportJobCreated(BaseModel):
    id: int
    secret: str | None = Field(description="HTTPS: the signing secret, shown once")
    public_key: str | None = Field(description="SFTP: add this to the server's authorized_keys")


class ExportJob(BaseModel):
    id: int
    progress: ProgressOut | None = Field(None, description="runs delivered of those planned (a catch-up shows here)")
    customer_id: int
    name: str
    site_ids: list[int]
    node_ids: list[int]
    resolution: str
    format: str
    schedule: str
    include_catalog: bool
    include_emissions: bool
    destination: str
    url: str | None
    sftp_host: str | None
    sftp_port: int | None
    sftp_username: str | None
    sftp_path: str | None
    sftp_public_key: str | None
    sftp_host_key: str | None
    enabled: bool
    created_at: datetime
    last_error: str | None
    failing_since: datetime | None


class ExportRun(BaseModel):
    id: int
    kind: str
    site_id: int | None
    period_start: datetime
    period_end: datetime
    status: str
    attempts: int
    next_attempt_at: datetime
    file_name: str | None
    rows: int | None
    bytes: int | None
    error: str | None
    created_at: datetime
    delivered_at: datetime | None



class MeterTerm(BaseModel):
    """One term of a virtual meter: exactly one of `node_id` and `meter_id`."""

    sign: Literal["+", "-"] = "+"
    node_id: int | None = Field(None, ge=1)
    meter_id: int | None = Field(None, ge=1)


class VirtualMeterIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "customer_id": 3, "name": "Offices without the data hall",
        "terms": [{"sign": "+", "node_id": 4}, {"sign": "-", "node_id": 9}]}]})

    customer_id: int | None = Field(None, ge=1, description="a reseller names the customer; others own one")
    name: str = Field(min_length=1, max_length=200)
    terms: list[MeterTerm] = Field(min_length=1, max_length=500)


class VirtualMeter(BaseModel):
    id: int
    customer_id: int
    name: str
    created_at: datetime
    terms: list[MeterTerm]


class MeterPoint(BaseModel):
    bucket: datetime
    energy_wh: float
    mean_power_w: float
    coverage: float


class MeterCostOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "currency": "GBP", "energy_wh": 74012.5, "energy_cost": "19.29", "energy_cost_minor": "1929",
        "by_band": {"day": "15.10", "night": "4.19"}}]})

    currency: str
    energy_wh: float
    energy_cost: Decimal
    energy_cost_minor: Decimal
    by_band: dict[str, Decimal]


# -- weather, degree days and savings ----------------------------------------------------------
class DayTemperatureIn(BaseModel):
    day: date = Field(ge=date(1970, 1, 1), description="the site's local calendar day")
    mean_c: float = Field(ge=-90, le=60, description="mean outdoor temperature of the day, °C")


class TemperaturesIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"days": [
        {"day": "2026-01-05", "mean_c": 3.4}, {"day": "2026-01-06", "mean_c": 1.9}]}]})

    days: list[DayTemperatureIn] = Field(min_length=1, max_length=20_000)


class Stored(BaseModel):
    stored: int


class DegreeDay(BaseModel):
    day: date
    mean_c: float | None
    hdd: float | None
    cdd: float | None
    energy_kwh: float | None = Field(description="the site's energy that day; null unless readings cover 90 % of it")


class BaselineOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "intercept_kwh": 812.0, "hdd_slope_kwh": 41.5, "cdd_slope_kwh": 0.0, "terms": ["hdd"], "r2": 0.91,
        "cv_rmse": 0.064, "days": 351, "first_day": "2025-12-01", "last_day": "2026-11-30",
        "hdd_base_c": 15.5, "cdd_base_c": 22.0}]})

    intercept_kwh: float = Field(description="kWh a day at no degree days")
    hdd_slope_kwh: float = Field(description="kWh per heating degree day")
    cdd_slope_kwh: float = Field(description="kWh per cooling degree day")
    terms: list[str] = Field(description="the degree days fitted; one that never varied is left out")
    r2: float
    cv_rmse: float | None = Field(description="coefficient of variation of the RMSE, n − p degrees of freedom")
    days: int
    first_day: date
    last_day: date
    hdd_base_c: float
    cdd_base_c: float


class SavingsProjectIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "LED retrofit", "starts_on": "2026-06-01", "baseline_days": 365}]})

    name: str = Field(min_length=1, max_length=200)
    starts_on: date = Field(ge=date(1970, 1, 15), le=date(2199, 12, 31),
                            description="first local day of the reporting period")
    baseline_days: int = Field(365, ge=14, le=1096, description="days before the start the baseline is fitted on")


class SavingsProject(BaseModel):
    id: int
    site_id: int
    name: str
    starts_on: date
    baseline_days: int
    created_at: datetime


class SavingsDay(BaseModel):
    day: date
    mean_c: float | None
    metered_kwh: float | None
    predicted_kwh: float | None
    savings_kwh: float | None


class SavingsOut(BaseModel):
    project: SavingsProject
    baseline: BaselineOut
    metered_kwh: float = Field(description="over the counted days")
    expected_kwh: float = Field(description="the baseline's prediction for the counted days' weather")
    savings_kwh: float = Field(description="expected − metered")
    savings_percent: float | None
    counted_days: int
    missing_days: int = Field(description="ended days without a temperature or without 90 % of readings")
    days: list[SavingsDay]


class GridFactorOut(BaseModel):
    country: str = Field(description="ISO 3166-1 alpha-2")
    name: str
    year: int
    g_co2e_per_kwh: float


class EmissionFactorIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"g_co2e_per_kwh": 162.0, "source": "Supplier fuel mix disclosure 2025"}, {"g_co2e_per_kwh": None}]})

    g_co2e_per_kwh: float | None = Field(ge=0, le=2000, description="the site's own annual factor; null: its "
                                         "country's from the bundled table")
    source: str | None = Field(default=None, max_length=200, description="where the site's own factor comes from")


class EmissionFactorOut(BaseModel):
    g_co2e_per_kwh: float | None = Field(description="null: no factor known (set one for the site)")
    origin: Literal["site", "country", "none"]
    source: str | None
    year: int | None
    hourly_hours: int = Field(description="hours of an uploaded hourly series, which take precedence where they are")


class HourFactorIn(BaseModel):
    hour: datetime = Field(description="the hour's start, with an offset")
    g_co2e_per_kwh: float = Field(ge=0, le=2000)


class HourlyFactorsIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"hours": [
        {"hour": "2026-01-05T13:00:00Z", "g_co2e_per_kwh": 182.0},
        {"hour": "2026-01-05T14:00:00Z", "g_co2e_per_kwh": 175.5}]}]})

    hours: list[HourFactorIn] = Field(min_length=1, max_length=22_000)


class NodeCo2eOut(BaseModel):
    node_id: int
    name: str
    kind: str
    period: date | None = Field(description="first local day of the period; null for the whole range")
    energy_kwh: float
    kg_co2e: float | None = Field(description="null: some of the energy has no factor (see unfactored_kwh)")
    unfactored_kwh: float
    hourly_hours: int


class MeterCo2eOut(BaseModel):
    energy_kwh: float
    kg_co2e: float | None = Field(description="each node's hours at its own site's factors; null: some of the "
                                              "energy has no factor")
    unfactored_node_hours: int


class EmissionsOut(BaseModel):
    factor: EmissionFactorOut
    rows: list[NodeCo2eOut]
