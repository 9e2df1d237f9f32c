"""The electrical tree of a site, ordered for bottom-up sums."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from analytics.kernels import roll_up_tree
from wattline.db import fetch_tuples


@dataclass
class Tree:
    node_ids: npt.NDArray[np.int64]  # topological order: parents before children
    parent: npt.NDArray[np.int64]  # index into node_ids, -1 for the root
    measured: npt.NDArray[np.bool_]  # the node has (or had) sensors of its own
    site_of: npt.NDArray[np.int64]

    def index(self) -> dict[int, int]:
        return {int(n): i for i, n in enumerate(self.node_ids)}


def load_trees(conn: psycopg.Connection[Any], site_ids: list[int]) -> Tree:
    rows = fetch_tuples(
        conn, """SELECT n.id, n.parent_id, n.site_id,
                        EXISTS (SELECT 1 FROM sensor_assignments a WHERE a.node_id = n.id) AS measured
                 FROM nodes n WHERE n.site_id = ANY(%s) ORDER BY n.id""", (site_ids,))
    children: dict[int | None, list[tuple[int, int, bool]]] = {}
    for node_id, parent_id, site_id, measured in rows:
        children.setdefault(parent_id, []).append((node_id, site_id, measured))
    order: list[tuple[int, int, int, bool]] = []  # (node, parent index, site, measured)
    stack = [(n, -1, s, m) for n, s, m in children.get(None, [])]
    while stack:
        node, parent_index, site, measured = stack.pop()
        order.append((node, parent_index, site, measured))
        me = len(order) - 1
        stack.extend((c, me, s, m) for c, s, m in children.get(node, []))
    return Tree(
        node_ids=np.array([o[0] for o in order], dtype=np.int64),
        parent=np.array([o[1] for o in order], dtype=np.int64),
        measured=np.array([o[3] for o in order], dtype=np.bool_),
        site_of=np.array([o[2] for o in order], dtype=np.int64),
    )


def roll_up(tree: Tree, measured: npt.NDArray[np.bool_], own: npt.NDArray[np.float64],
            ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Totals, remainders and has-data per node and column for `own[node, k]`, where
    `measured[node, k]` says a sensor was assigned to the node then (kernels.roll_up_tree)."""
    total, remainder, has_data = roll_up_tree(tree.parent, np.ascontiguousarray(measured),
                                              np.ascontiguousarray(own))
    return total, remainder, has_data
