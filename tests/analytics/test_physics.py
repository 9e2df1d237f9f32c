"""Connection types and the hierarchy sums, worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analytics.kernels import roll_up_tree
from wattline.domain import Connection


@pytest.mark.parametrize(("connection", "nominal", "per_conductor", "conductors"), [
    (Connection.SINGLE_PHASE, 230.0, 230.0, 1),
    (Connection.SPLIT_PHASE, 240.0, 120.0, 2),
    (Connection.THREE_PHASE_WYE, 400.0, 400.0 / math.sqrt(3), 3),
    (Connection.THREE_PHASE_DELTA, 480.0, 480.0 / math.sqrt(3), 3),
])
def test_conductor_voltage(connection, nominal, per_conductor, conductors):
    assert connection.conductor_voltage(nominal) == pytest.approx(per_conductor)
    assert connection.conductors == conductors


def test_balanced_three_phase_sums_to_sqrt3_formula():
    v = Connection.THREE_PHASE_WYE.conductor_voltage(400.0)
    total = sum(v * 10.0 * 0.9 for _ in range(3))
    assert total == pytest.approx(math.sqrt(3) * 400.0 * 10.0 * 0.9)


def test_nested_tree_sums_and_remainder():
    # 0 site → 1 main panel (own meter: 100) → 2 circuit A (30), 3 feeder (no sensor)
    #   3 feeder → 4 sub-panel (no sensor) → 5 circuit B (20), 6 circuit C (25)
    parent = np.array([-1, 0, 1, 1, 3, 4, 4])
    measured = np.array([[False], [True], [True], [False], [False], [True], [True]])
    own = np.array([[0.0], [100.0], [30.0], [0.0], [0.0], [20.0], [25.0]])
    total, remainder, has_data = roll_up_tree(parent, measured, own)
    assert total[:, 0].tolist() == [100.0, 100.0, 30.0, 45.0, 45.0, 20.0, 25.0]
    assert remainder[1, 0] == pytest.approx(100.0 - 30.0 - 45.0)  # unmonitored under the main meter
    assert np.isnan(remainder[[0, 2, 3, 4, 5, 6], 0]).all()
    assert has_data.all()


def test_branch_without_data_is_left_out():
    parent = np.array([-1, 0, 0])
    measured = np.array([[False], [True], [False]])
    total, _, has_data = roll_up_tree(parent, measured, np.array([[0.0], [7.0], [0.0]]))
    assert has_data[:, 0].tolist() == [True, True, False]
    assert total[0, 0] == 7.0


def test_a_panel_measured_for_part_of_the_time_is_its_children_for_the_rest():
    # 0 site → 1 panel (its meter assigned in column 0 only) → 2 circuit (20, 25)
    parent = np.array([-1, 0, 1])
    measured = np.array([[False, False], [True, False], [True, True]])
    own = np.array([[0.0, 0.0], [100.0, 0.0], [20.0, 25.0]])
    total, remainder, has_data = roll_up_tree(parent, measured, own)
    assert total[1].tolist() == [100.0, 25.0] and total[0].tolist() == [100.0, 25.0]
    assert remainder[1, 0] == 80.0 and np.isnan(remainder[1, 1])
    assert has_data.all()
