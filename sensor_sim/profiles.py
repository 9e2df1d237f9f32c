"""Load profiles: the RMS current a clamp would read on one conductor of a circuit.

Vectorised over sensors, so one tick of 100,000 sensors is a handful of numpy calls.
Times are Unix seconds; `local_hour` is the site's local time of day in hours.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


class Profile(IntEnum):
    BASE = 0  # always-on: servers, pumps, standby
    LIGHTING = 1  # opening hours, with a night-time remnant
    HVAC = 2  # daily cycle plus slow weather-like drift, heavier in the afternoon
    REFRIGERATION = 3  # compressor cycling on and off with a duty cycle
    MOTOR = 4  # production motors on shifts, inrush at start
    PV = 5  # a solar inverter's output: the sun's height at the site, with passing cloud (generation)


PROFILE_MIX = np.array([0.15, 0.25, 0.25, 0.2, 0.15])  # consumption only: PV circuits are added apart


def sun_height(t: float, latitude_deg: F64, longitude_deg: F64) -> F64:
    """The sine of the sun's elevation at Unix time t, per place (negative: night).

    Declination by Cooper's formula and solar time from longitude alone (no equation of
    time): within about a degree and a quarter of an hour, plenty for a load profile."""
    day_of_year = (t / 86400.0) % 365.2422
    declination = np.radians(-23.44) * np.cos(2 * np.pi * (day_of_year + 10.0) / 365.2422)
    solar_hours = (t % 86400.0) / 3600.0 + longitude_deg / 15.0
    hour_angle = np.radians(15.0 * (solar_hours - 12.0))
    lat = np.radians(latitude_deg)
    out: F64 = np.sin(lat) * np.sin(declination) + np.cos(lat) * np.cos(declination) * np.cos(hour_angle)
    return out


def currents(profile: npt.NDArray[np.int8], rated_a: F64, phase_offset_s: F64, t: float, local_hour: F64,
             open_now: npt.NDArray[np.bool_], weather: F64, rng: np.random.Generator, sun: F64 | None = None) -> F64:
    """One reading per sensor at time t; `sun` is `sun_height` at each sensor's site."""
    out = np.empty_like(rated_a)
    hour_angle = 2 * np.pi * (local_hour - 15.0) / 24.0

    base = profile == Profile.BASE
    out[base] = 0.35 * rated_a[base]

    light = profile == Profile.LIGHTING
    out[light] = np.where(open_now[light], 0.8, 0.08) * rated_a[light]

    hvac = profile == Profile.HVAC
    daily = 0.45 + 0.25 * np.cos(hour_angle[hvac]) + 0.2 * weather[hvac]
    out[hvac] = np.clip(daily, 0.05, 1.0) * rated_a[hvac] * np.where(open_now[hvac], 1.0, 0.5)

    fridge = profile == Profile.REFRIGERATION
    period = 1200.0  # a compressor cycle of 20 minutes, 45 % duty
    on = ((t + phase_offset_s[fridge]) % period) < 0.45 * period
    out[fridge] = np.where(on, 0.7, 0.03) * rated_a[fridge]

    motor = profile == Profile.MOTOR
    shift = open_now[motor]
    since_start = (t + phase_offset_s[motor]) % 3600.0
    inrush = np.where(since_start < 20.0, 2.5, 1.0)
    out[motor] = np.where(shift, 0.6 * inrush, 0.0) * rated_a[motor]

    pv = profile == Profile.PV
    if pv.any():
        height = np.zeros(int(pv.sum())) if sun is None else np.maximum(sun[pv], 0.0)
        cloud = 1.0 - 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * (t + phase_offset_s[pv]) / 2700.0))
        out[pv] = 0.9 * height ** 1.2 * cloud * rated_a[pv]

    noise = rng.normal(1.0, 0.01, out.shape)
    return np.maximum(out * noise, 0.0)
