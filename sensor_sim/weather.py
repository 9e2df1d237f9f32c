"""Daily mean outdoor temperature at a latitude: a seasonal cycle plus day-to-day weather.

Not a climate model: enough for a demo's degree days, and for the simulator's HVAC loads
to follow the weather the site's baseline is then fitted on. Each day's value depends only
on (latitude, day, seed), so any range can be asked for in any order and agrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
#: Day-to-day weather: the mean of three days' noise of this spread (°C), so neighbours correlate.
NOISE_C = 3.0


def _noise(seed: int, ordinal: int) -> float:
    return float(np.random.default_rng([seed, ordinal]).normal(0.0, NOISE_C))


def daily_mean_c(latitude: float, days: Sequence[date], *, seed: int = 3) -> F64:
    """The mean temperature of each day. Warmer and steadier towards the equator; coldest
    in mid-January in the north and mid-July in the south."""
    lat = abs(latitude)
    annual = 29.0 - 0.0066 * lat * lat
    swing = 0.18 * lat  # half the summer-winter difference
    hemisphere = 1.0 if latitude >= 0 else -1.0
    out = np.empty(len(days))
    for i, d in enumerate(days):
        season = np.cos(2 * np.pi * (d.timetuple().tm_yday - 15) / 365.25)
        weather = sum(_noise(seed, d.toordinal() - k) for k in range(3)) / np.sqrt(3)
        out[i] = round(annual - hemisphere * swing * season + weather, 1)
    return out


def hvac_demand(mean_c: F64, heat_base_c: float = 15.5, cool_base_c: float = 22.0) -> F64:
    """How hard heating or cooling works for a day's mean temperature, about −0.3 (mild) to
    1.5 (a freezing or a scorching day): the term the HVAC profile adds."""
    degree_days = np.maximum(heat_base_c - mean_c, 0.0) + np.maximum(mean_c - cool_base_c, 0.0)
    return np.asarray(np.clip(degree_days / 10.0 - 0.3, -0.3, 1.5))
