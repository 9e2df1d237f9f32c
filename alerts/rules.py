"""What a rule may say, per kind. Stored as the rule's `params` (with its `kind`), and
validated by the same models in the API and in the scheduler."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")


def _window(v: tuple[str, str]) -> tuple[str, str]:
    """A local time window: two HH:MM times (24:00 for midnight at the end), start before end."""
    if not all(_HHMM.match(x) for x in v) or v[0] >= v[1]:
        raise ValueError("hours must be two HH:MM times, start before end")
    return v


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Threshold(_Params):
    """Power above (or below) a value during chosen hours and days, held for a while."""

    kind: Literal["threshold"] = "threshold"
    above_w: float | None = Field(None, ge=0, description="raise while mean power is above this")
    below_w: float | None = Field(None, ge=0, description="raise while mean power is below this")
    hold_minutes: int = Field(15, ge=1, le=7 * 1440, description="the condition must hold this long")
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    hours: tuple[str, str] = Field(("00:00", "24:00"), description="local time window, start < end")

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: tuple[str, str]) -> tuple[str, str]:
        return _window(v)

    @model_validator(mode="after")
    def _one_limit(self) -> Threshold:
        if (self.above_w is None) == (self.below_w is None):
            raise ValueError("give exactly one of above_w and below_w")
        return self


class AfterHours(_Params):
    """Energy outside the site's opening hours, per local day, above a baseline: a fixed
    `baseline_kwh` a day, or else `factor` × the median energy per closed hour of the
    previous four weeks."""

    kind: Literal["after_hours"] = "after_hours"
    baseline_kwh: float | None = Field(None, ge=0)
    factor: float = Field(1.5, ge=1.0, le=100.0)
    min_kwh: float = Field(0.5, ge=0, description="ignore days below this, however far above baseline")


class SensorOffline(_Params):
    kind: Literal["sensor_offline"] = "sensor_offline"
    intervals: int = Field(6, ge=2, le=100_000, description="silent for this many reporting intervals")


class BridgeOffline(_Params):
    kind: Literal["bridge_offline"] = "bridge_offline"
    hold_minutes: int = Field(5, ge=0, le=7 * 1440, description="offline for at least this long")


class Anomaly(_Params):
    """Hourly energy far from the median of the same weekday and hour in earlier weeks."""

    kind: Literal["anomaly"] = "anomaly"
    sensitivity: float = Field(4.0, gt=0, le=100, description="robust z-score (MAD-based σ) to raise at")
    weeks: int = Field(4, ge=3, le=26)
    direction: Literal["both", "high", "low"] = "both"
    min_deviation_kwh: float = Field(0.1, ge=0, description="ignore smaller absolute deviations")
    hold_hours: int = Field(1, ge=1, le=168)


class Cycling(_Params):
    """Compressor or motor starts per hour (off→on transitions of 1-minute power)."""

    kind: Literal["cycling"] = "cycling"
    max_starts_per_hour: float = Field(6, gt=0)
    on_w: float | None = Field(None, gt=0, description="on above this; default half the usual running power")
    hold_hours: int = Field(1, ge=1, le=168)


class BaseLoad(_Params):
    """The base load (the lowest hourly mean power of a day) creeping up: the median of the
    last `recent_days` above the median of the `baseline_days` before by `rise_pct`."""

    kind: Literal["base_load"] = "base_load"
    rise_pct: float = Field(20.0, gt=0)
    min_rise_w: float = Field(50.0, ge=0, description="and by at least this much")
    recent_days: int = Field(3, ge=1, le=31)
    baseline_days: int = Field(14, ge=3, le=90)


class Budget(_Params):
    """The month's projected cost above a cap, in the tariff's currency (major units)."""

    kind: Literal["budget"] = "budget"
    cap: Decimal = Field(gt=0, max_digits=14, decimal_places=2)


RuleParams = Annotated[Threshold | AfterHours | SensorOffline | BridgeOffline | Anomaly | Cycling | BaseLoad | Budget,
                       Field(discriminator="kind")]
RULE_PARAMS: TypeAdapter[RuleParams] = TypeAdapter(RuleParams)
KINDS = ("threshold", "after_hours", "sensor_offline", "bridge_offline", "anomaly", "cycling", "base_load", "budget")
#: Each kind's model, for forms built from its fields (defaults, descriptions, types).
MODELS: dict[str, type[BaseModel]] = {
    model.model_fields["kind"].default: model
    for model in (Threshold, AfterHours, SensorOffline, BridgeOffline, Anomaly, Cycling, BaseLoad, Budget)}


# -- what a rule is besides its condition ---------------------------------------------------------
Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
#: A rule's severity unless its author chooses: a silent bridge takes every sensor behind it.
DEFAULT_SEVERITY: dict[str, Severity] = {"bridge_offline": "critical"}
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


class Schedule(_Params):
    """When a rule is armed, in the site's local time: an episode opens only if its condition
    starts inside (a chiller rule for opening hours, a security one for nights)."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    hours: tuple[str, str] = Field(("00:00", "24:00"), description="local time window, start < end")

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: tuple[str, str]) -> tuple[str, str]:
        return _window(v)

    def armed(self, weekday: int, minute_of_day: int) -> bool:
        """Whether the rule is armed at this local weekday (0 = Monday) and minute."""
        lo, hi = (int(h[:2]) * 60 + int(h[3:]) for h in self.hours)
        return WEEKDAYS[weekday] in self.days and lo <= minute_of_day < hi


class Recipients(_Params):
    """Who hears of a rule's alerts besides the notification centre."""

    user_ids: list[int] = Field(default_factory=list, max_length=200, description="people of the customer")
    emails: list[str] = Field(default_factory=list, max_length=50, description="plain addresses")
    webhook_ids: list[int] | None = Field(None, description="the customer's webhooks; null: every one")

    @field_validator("emails")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if not _EMAIL.match(e.strip())]
        if bad:
            raise ValueError(f"not email addresses: {', '.join(bad[:3])}")
        return sorted({e.strip() for e in v})
