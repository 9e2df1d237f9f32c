"""Site-local time buckets: the one rule for which bucket an instant falls in.

- 1 minute and 15 minutes: UTC (every zone's offset is a whole number of quarter hours).
- 1 hour: real hours on the site's clock. The sub-hour part of the zone's UTC offset
  (India's +5:30, say) shifts them; DST changes are whole hours, so a fall-back day has 25
  distinct hourly buckets and a spring-forward day 23. (`time_bucket('1 hour', ts, tz)`
  would fold the repeated hour into one bucket, which is why this is not SQL.)
- 1 day: local calendar days, each as long as it really is (23 or 25 hours across DST).

The rollup worker, the cost tier, the cost readers and the per-sensor measurements all
bucket through `bucket_bounds`, so a sensor's buckets and its node's rollups line up.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd

from wattline.domain import Resolution

Seconds = npt.NDArray[np.float64]


def site_offset_minutes(tz: str) -> int:
    """The zone's UTC offset in minutes now (only its sub-hour part shifts hours)."""
    offset = datetime.now(ZoneInfo(tz)).utcoffset()
    return int(offset.total_seconds() // 60) if offset else 0


def bucket_bounds(stamps_s: npt.ArrayLike, resolution: Resolution, tz: str) -> tuple[Seconds, Seconds]:
    """Start and end (epoch seconds) of the `resolution` bucket that holds each instant, in zone `tz`."""
    stamps = np.asarray(stamps_s, dtype=np.float64)
    if resolution is Resolution.DAY1:
        return _local_days(stamps, tz)
    width = resolution.minutes * 60.0
    shift = (site_offset_minutes(tz) % 60) * 60.0 if resolution is Resolution.HOUR1 else 0.0
    starts = np.floor((stamps - shift) / width) * width + shift
    return starts, starts + width


def _local_days(stamps: Seconds, tz: str) -> tuple[Seconds, Seconds]:
    if len(stamps) == 0:
        return stamps.copy(), stamps.copy()
    utc = pd.DatetimeIndex(pd.to_datetime(stamps, unit="s", utc=True))
    midnight = utc.tz_convert(tz).tz_localize(None).normalize()
    # A midnight that DST skips starts the day at the first instant after it; one it repeats, at the first.
    first = np.ones(len(stamps), dtype=bool)
    starts = midnight.tz_localize(tz, ambiguous=first, nonexistent="shift_forward")
    ends = (midnight + pd.Timedelta(days=1)).tz_localize(tz, ambiguous=first, nonexistent="shift_forward")
    return _epoch(starts), _epoch(ends)


def _epoch(index: pd.DatetimeIndex) -> Seconds:
    return np.asarray(index.tz_convert("UTC").as_unit("us").asi8, dtype=np.float64) / 1e6
