"""The pure arithmetic of alerting: runs held long enough, robust scores, compressor starts."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from alerts.detect import robust_scores, runs, starts_per_hour


def test_runs_need_the_hold_and_end_at_the_first_false_sample() -> None:
    stamps = np.arange(0.0, 600.0, 60.0)
    values = np.array([0, 9, 9, 9, 0, 9, 9, 0, 9, 9], dtype=float)
    found = runs(stamps, values > 5, values, 60.0, 180.0)
    assert [(r.start, r.end) for r in found] == [(60.0, 240.0)]
    # A run still going at the last sample has no end.
    found = runs(stamps, values > 5, values, 60.0, 120.0)
    assert [(r.start, r.end) for r in found] == [(60.0, 240.0), (300.0, 420.0), (480.0, None)]


def test_missing_data_and_gaps_break_runs() -> None:
    stamps = np.array([0.0, 60, 120, 180, 600, 660])
    values = np.array([9, np.nan, 9, 9, 9, 9])
    found = runs(stamps, np.ones(6, dtype=bool), values, 60.0, 120.0)
    # NaN at 60 ends the first (too short); the jump from 180 to 600 splits the rest.
    assert [(r.start, r.end) for r in found] == [(120.0, 240.0), (600.0, None)]


@given(st.lists(st.booleans(), min_size=1, max_size=200), st.integers(1, 10))
def test_every_run_reported_holds_throughout_and_is_long_enough(flags: list[bool], hold: int) -> None:
    stamps = np.arange(len(flags), dtype=float)
    cond = np.array(flags)
    found = runs(stamps, cond, np.ones(len(flags)), 1.0, float(hold))
    covered = np.zeros(len(flags), dtype=bool)
    for r in found:
        end = len(flags) if r.end is None else int(r.end)
        assert end - int(r.start) >= hold and cond[int(r.start):end].all()
        covered[int(r.start):end] = True
    # Nothing long enough is missed.
    longest = 0
    for i, f in enumerate(flags):
        longest = longest + 1 if f else 0
        if longest >= hold:
            assert covered[i]


def test_robust_scores_ignore_one_outlier_in_the_history() -> None:
    history = np.array([[10.0, 10.5, 9.5, 100.0]])
    baseline, score = robust_scores(np.array([30.0]), history)
    assert baseline[0] == 10.25 and score[0] > 4
    _, calm = robust_scores(np.array([10.2]), history)
    assert abs(calm[0]) < 1
    _, unknown = robust_scores(np.array([30.0]), np.array([[10.0, np.nan, np.nan]]))
    assert np.isnan(unknown[0])


def test_starts_per_hour_counts_off_to_on_steps() -> None:
    stamps = np.arange(0.0, 7200.0, 60.0)
    on = ((stamps % 600) < 240).astype(float) * 1000.0  # a 10-minute cycle: 6 starts an hour
    hours, starts = starts_per_hour(stamps, on, 500.0)
    assert hours.tolist() == [0.0, 3600.0]
    assert starts.tolist() == [5.0, 6.0]  # the first minute is on already: no start seen
