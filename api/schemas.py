"""Request and response bodies, with examples for the OpenAPI document."""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from wattline.domain import Connection, Role

Serial = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", examples=["CT0000000001"])


class Login(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "demo@wattline.example",
                                                               "password": "wattline-demo"}]})
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class Token(BaseModel):
    token: str = Field(examples=["wl_AbCd1234.s3cr3t"])
    prefix: str
    expires_at: datetime | None
    scopes: list[str]


class KeyRequest(BaseModel):
    name: str = Field("", max_length=100, examples=["BMS integration"])
    scopes: list[Literal["read", "write", "commission", "admin"]] = Field(min_length=1, examples=[["read"]])
    ttl_days: int | None = Field(None, ge=1, le=3650, examples=[365])


class KeyInfo(BaseModel):
    id: int
    prefix: str
    name: str
    scopes: list[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime


class Me(BaseModel):
    user_id: int
    role: Role
    reseller_id: int | None
    customer_id: int | None
    scopes: list[str]


class CustomerIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["Acme Foods plc"])
    billing_email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)


class Customer(BaseModel):
    id: int
    name: str
    reseller_id: int
    created_at: datetime


class SiteIn(BaseModel):
    customer_id: int | None = Field(None, description="Required for reseller users.")
    name: str = Field(min_length=1, max_length=200, examples=["Leeds depot"])
    timezone: str = Field("UTC", max_length=64, examples=["Europe/London"])
    country: str = Field("GB", pattern=r"^[A-Z]{2}$")
    floor_area_m2: float | None = Field(None, gt=0, lt=10_000_000)
    opening_hours: dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                        tuple[str, str]] = Field(default_factory=dict, examples=[{"mon": ["07:00", "19:00"]}])


class Site(BaseModel):
    id: int
    customer_id: int
    name: str
    timezone: str
    country: str
    floor_area_m2: float | None
    opening_hours: dict[str, list[str]]


class NodeIn(BaseModel):
    parent_id: int
    kind: Literal["panel", "circuit", "device"]
    name: str = Field(min_length=1, max_length=200, examples=["Chiller 2"])
    external_ref: str | None = Field(None, max_length=100, examples=["DB2-C14"])
    nominal_voltage_v: float | None = Field(None, gt=0, lt=100_000, examples=[400])
    power_factor: float | None = Field(None, gt=0, le=1, examples=[0.92])
    connection: Connection | None = None
    asset_type: str | None = Field(None, max_length=50, examples=["refrigeration"])


class NodePatch(BaseModel):
    parent_id: int | None = Field(None, description="Move the node under another parent.")
    name: str | None = Field(None, min_length=1, max_length=200)
    nominal_voltage_v: float | None = Field(None, gt=0, lt=100_000)
    power_factor: float | None = Field(None, gt=0, le=1)


class Node(BaseModel):
    id: int
    parent_id: int | None
    kind: str
    name: str
    external_ref: str | None
    depth: int | None = None
    sensors: int | None = None


class BridgeIn(BaseModel):
    serial: str = Serial
    name: str = Field("", max_length=200)


class Bridge(BaseModel):
    id: int
    serial: str
    name: str
    site_id: int
    online: bool | None
    status_changed_at: datetime | None


class SensorInfo(BaseModel):
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


class Assignment(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"node_id": 12, "phase": 1, "ct_rating_a": 100}]})
    node_id: int
    phase: int = Field(ge=1, le=3)
    ct_rating_a: float = Field(gt=0, le=10_000)
    bridge_id: int | None = Field(None, description="Only for a sensor that has not reported yet.")


class SensorCheck(BaseModel):
    serial: str
    state: Literal["live", "silent", "implausible", "never_seen"]
    last_seen_at: datetime | None
    last_current_a: float | None
    ct_rating_a: float | None
    detail: str


class BridgeCheck(BaseModel):
    serial: str
    online: bool | None
    status_changed_at: datetime | None


class CommissioningReport(BaseModel):
    site_id: int
    mapped: int
    discovered: int
    live: int
    silent: int
    implausible: int
    sensors: list[SensorCheck]


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
    bands: list[TariffBandIn] = Field(min_length=1)


class Usage(BaseModel):
    node_id: int
    parent_id: int | None
    kind: str
    name: str
    energy_wh: float
    unmonitored_wh: float | None
    max_power_w: float | None


class Created(BaseModel):
    id: int


class CustomerPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    billing_email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)


class SitePatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    timezone: str | None = Field(None, max_length=64)
    floor_area_m2: float | None = Field(None, gt=0, lt=10_000_000)
    opening_hours: dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], tuple[str, str]] | None = None


class BridgePatch(BaseModel):
    name: str = Field(max_length=200)
