"""The electrical tree of a site, ordered for bottom-up sums."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from analytics.kernels import roll_up_tree


@dataclass
class Tree:
    node_ids: npt.NDArray[np.int64]  # topological order: parents before children
    parent: npt.NDArray[np.int64]  # index into node_ids, -1 for the root
    measured: npt.NDArray[np.bool_]  # the node has (or had) sensors of its own
    site_of: npt.NDArray[np.int64]
    generation: npt.NDArray[np.bool_]  # the node's flow is generation (wattline.generation)

    def index(self) -> dict[int, int]:
        return {int(n): i for i, n in enumerate(self.node_ids)}


TreeRow = tuple[int, int | None, int, bool, bool]  # (node, parent, site, measured, generates)

#: A site's nodes as `tree_of` takes them: measured if it has (or had) a sensor of its own.
TREE_ROWS = """SELECT n.id, n.parent_id, n.site_id,
                      EXISTS (SELECT 1 FROM sensor_assignments a WHERE a.node_id = n.id) AS measured,
                      n.flow = 'generation'
               FROM nodes n WHERE n.site_id = ANY(%s) ORDER BY n.id"""


def tree_of(rows: list[TreeRow]) -> Tree:
    """The tree of `rows` (`TREE_ROWS`, in node order)."""
    children: dict[int | None, list[tuple[int, int, bool, bool]]] = {}
    for node_id, parent_id, site_id, measured, generates in rows:
        children.setdefault(parent_id, []).append((node_id, site_id, measured, generates))
    order: list[tuple[int, int, int, bool, bool]] = []  # (node, parent index, site, measured, generates)
    stack = [(n, -1, s, m, g) for n, s, m, g in children.get(None, [])]
    while stack:
        node, parent_index, site, measured, generates = stack.pop()
        order.append((node, parent_index, site, measured, generates))
        me = len(order) - 1
        stack.extend((c, me, s, m, g) for c, s, m, g in children.get(node, []))
    return Tree(
        node_ids=np.array([o[0] for o in order], dtype=np.int64),
        parent=np.array([o[1] for o in order], dtype=np.int64),
        measured=np.array([o[3] for o in order], dtype=np.bool_),
        site_of=np.array([o[2] for o in order], dtype=np.int64),
        generation=np.array([o[4] for o in order], dtype=np.bool_),
    )


def roll_up(tree: Tree, measured: npt.NDArray[np.bool_], own: npt.NDArray[np.float64],
            ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Totals, remainders and has-data per node and column for `own[node, k]`, where
    `measured[node, k]` says a sensor was assigned to the node then (kernels.roll_up_tree)."""
    total, remainder, has_data = roll_up_tree(tree.parent, np.ascontiguousarray(measured),
                                              np.ascontiguousarray(own))
    return total, remainder, has_data
