"""Generation: which circuits and devices produce energy (rooftop PV, a CHP set), and the
rule that keeps the arithmetic honest.

A clamp measures the magnitude of the current, never its direction, so the direction comes
from the node: `nodes.flow` is `consumption` (the default) or `generation`, on circuits and
devices. The rollups sum consumption and generation apart, and per minute the site imports
max(C − G, 0), exports max(G − C, 0) and consumes min(C, G) of its own generation
(analytics.worker; migration 036).

The rule: a clamp on a consumption node above generation would read |C − G| over the same
minutes, which no arithmetic can split. So no node may be measured, over any time its
generation below is measured, above that generation (an open assignment above generation
not yet clamped counts too); and everything under a generation node generates. Every write
that changes the tree, a flow or an assignment checks the site with `check_site` in its
own transaction, and is refused with the reason.

Signed meters: a sensor declared `reports_power` (migration 037) is a meter that sends its
real power (SenML `power`, W) with its sign, positive flowing into the node's loads and
negative flowing back towards the supply. Its node's minute nets: consumption where
positive, generation given out where negative, whatever the node's flow. Above generation,
such a meter reads the subtree's net, so the rule allows it there: the roll-up takes what
the children's net does not explain as the node's remainder, unmonitored consumption or
generation by its sign (analytics.kernels.roll_up_balance).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Literal

import psycopg

from wattline.db import fetch_all
from wattline.errors import Invalid

Flow = Literal["consumption", "generation"]
FLOWS: tuple[Flow, ...] = ("consumption", "generation")
GENERATING_KINDS = ("circuit", "device")

Span = tuple[float, float]  # epoch seconds, ±inf open

#: A site's energy balance (wattline.queries.energy_balance), each figure with the words
#: the dashboard and the monthly report show it under.
BALANCE: tuple[tuple[str, str], ...] = (
    ("consumption_wh", "Consumed"), ("generation_wh", "Generated"), ("import_wh", "From the grid"),
    ("export_wh", "To the grid"), ("self_consumption_wh", "Own generation used"))


def balance_totals(buckets: list[dict[str, Any]]) -> dict[str, float]:
    """The balance's figures summed over its buckets, in Wh."""
    return {key: float(sum(b[key] for b in buckets)) for key, _ in BALANCE}


def _overlap(a: list[Span], b: list[Span]) -> bool:
    return any(lo1 < hi2 and lo2 < hi1 for lo1, hi1 in a for lo2, hi2 in b)


def problem(conn: psycopg.Connection[Any], site_id: int) -> str | None:
    """The first way the site breaks the rule, as a sentence; None if it keeps it."""
    nodes = {r["id"]: r for r in fetch_all(conn, "SELECT id, parent_id, name, kind, flow FROM nodes WHERE site_id = %s",
                                           (site_id,))}
    if not any(n["flow"] == "generation" for n in nodes.values()):
        return None
    spans: dict[int, list[Span]] = defaultdict(list)
    clamps: dict[int, list[Span]] = defaultdict(list)  # the spans of sensors that read no direction
    for r in fetch_all(conn, """SELECT a.node_id, extract(epoch FROM a.valid_from)::float8 AS lo,
                                       extract(epoch FROM a.valid_to)::float8 AS hi, s.reports_power
                                FROM sensor_assignments a JOIN nodes n ON n.id = a.node_id
                                JOIN sensors s ON s.id = a.sensor_id
                                WHERE n.site_id = %s""", (site_id,)):
        spans[r["node_id"]].append((r["lo"], r["hi"]))
        if not r["reports_power"]:
            clamps[r["node_id"]].append((r["lo"], r["hi"]))

    def ancestors(node_id: int) -> list[dict[str, Any]]:
        out, parent = [], nodes[node_id]["parent_id"]
        while parent is not None:
            out.append(nodes[parent])
            parent = nodes[parent]["parent_id"]
        return out

    below: dict[int, list[Span]] = defaultdict(list)  # generation node -> its subtree's spans
    for node in nodes.values():
        if node["flow"] == "generation":
            for above in [node, *ancestors(node["id"])]:
                if above["flow"] == "generation":
                    below[above["id"]] += spans.get(node["id"], [])
    for node in nodes.values():
        up = ancestors(node["id"])
        generating_above = next((a for a in up if a["flow"] == "generation"), None)
        if node["flow"] == "consumption" and generating_above is not None:
            return (f"{node['name']} is under the generation {generating_above['kind']} "
                    f"{generating_above['name']}: everything under generation generates")
        if node["flow"] != "generation" or (generating_above is not None):
            continue
        mine = below[node["id"]]
        for above in up:
            theirs = clamps.get(above["id"], [])
            if _overlap(mine, theirs) or (not mine and any(math.isinf(hi) for _, hi in theirs)):
                return (f"{above['name']} has a clamp above the generation {node['kind']} {node['name']}: a clamp "
                        "there reads the net current's size, not its direction, so consumption and generation "
                        "cannot be told apart. Clamp the generation and the consumption circuits each on their own, "
                        "or put a meter there that reports signed power")
    return None


def may_generate(conn: psycopg.Connection[Any], site_id: int) -> bool:
    """Whether the site can show generation: a node marked so, or a meter that reports its
    power's sign on one of its nodes (which may read export with nothing marked)."""
    row = fetch_all(conn, """SELECT EXISTS (SELECT 1 FROM nodes WHERE site_id = %(site)s AND flow = 'generation')
                                 OR EXISTS (SELECT 1 FROM sensor_assignments a JOIN nodes n ON n.id = a.node_id
                                            JOIN sensors s ON s.id = a.sensor_id
                                            WHERE n.site_id = %(site)s AND s.reports_power) AS may""",
                    {"site": site_id})
    return bool(row[0]["may"])


def check_site(conn: psycopg.Connection[Any], site_id: int) -> None:
    """Raise Invalid with the reason if the site breaks the rule (callers are in a transaction)."""
    if (reason := problem(conn, site_id)) is not None:
        raise Invalid("Generation cannot be measured there", reason, field="flow")
