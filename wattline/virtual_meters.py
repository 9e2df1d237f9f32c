"""Virtual meters: a named group of nodes with + and − terms, read like a node.

A cost centre, a production line or a tenant is rarely one node of the tree: "the main
incomer minus the data hall", "line 1's three boards", "both sites' kitchens". A virtual
meter names such a group, within one customer (across its sites if need be). A term is a
node or another virtual meter, with a sign.

What a meter may not be, refused with the reason before anything is stored:
- a cycle: a meter that counts itself, through any chain of meters;
- double counting: a node's rollups already hold everything below it, so every part of the
  tree must count once or not at all (the sum of the signs of the terms at or above it is
  0 or 1). "Board A + circuit A3" counts A3 twice; "board A − circuit A3" is A without A3;
  "− circuit A3" alone subtracts what nothing counts;
- a term that cancels out to nothing, or a meter with no terms.

The series of a meter is composed when read (`analytics.virtual_meters`), from the rollups
of the nodes it expands to: Σ weight × the node's energy and mean power, per bucket.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from wattline import audit
from wattline.db import fetch_all, fetch_one
from wattline.errors import Conflict, Invalid, NotFound
from wattline.principal import Principal
from wattline.queries import scope

Conn = psycopg.Connection[Any]
#: How many terms one meter may have (after its own list, before expansion).
MAX_TERMS = 500


@dataclass(frozen=True)
class Term:
    """One term: a node or another virtual meter, added (+1) or subtracted (−1)."""

    sign: Literal[1, -1]
    node_id: int | None = None
    meter_id: int | None = None

    def __post_init__(self) -> None:
        if (self.node_id is None) == (self.meter_id is None):
            raise Invalid("Invalid term", "a term names a node or a virtual meter, not both or neither",
                          field="terms")


# -- reads ---------------------------------------------------------------------------------
def meters(conn: Conn, p: Principal, customer_id: int | None = None, *,
           meter_id: int | None = None) -> list[dict[str, Any]]:
    """The virtual meters `p` may see (of one customer, or the one meter, if given), with
    their terms.

    A user granted only some sites sees a meter only if every node it expands to is on one
    of them: a meter over other sites would show their energy."""
    where, params = scope(p, sites=None)
    rows = fetch_all(conn, sql.SQL("""
        SELECT m.id, m.customer_id, m.name, m.created_at,
               COALESCE(json_agg(json_build_object('sign', t.sign, 'node_id', t.node_id,
                                                   'meter_id', t.part_meter_id) ORDER BY t.position)
                        FILTER (WHERE t.meter_id IS NOT NULL), '[]') AS terms
        FROM virtual_meters m JOIN customers c ON c.id = m.customer_id
        LEFT JOIN virtual_meter_terms t ON t.meter_id = m.id
        WHERE {where} AND (%(customer)s::bigint IS NULL OR m.customer_id = %(customer)s)
          AND (%(meter)s::bigint IS NULL OR m.id = %(meter)s)
        GROUP BY m.id ORDER BY m.name, m.id""").format(where=where),
                     {**params, "customer": customer_id, "meter": meter_id})
    if p.site_ids is None:
        return rows
    allowed = set(p.site_ids)
    return [r for r in rows if set(node_sites(conn, expand(conn, r["id"])).values()) <= allowed]


def meter(conn: Conn, p: Principal, meter_id: int) -> dict[str, Any] | None:
    """One virtual meter `p` may see, or None."""
    return next(iter(meters(conn, p, meter_id=meter_id)), None)


def expand(conn: Conn, meter_id: int) -> dict[int, int]:
    """The meter as node → weight (±1), through the meters it counts. Stored meters were
    checked when saved, so this neither loops nor counts twice."""
    weights = _expand(conn, [Term(sign=1, meter_id=meter_id)], [])
    return {node: w for node, w in weights.items() if w}


# -- writes --------------------------------------------------------------------------------
def save_meter(conn: Conn, actor: Principal | None, customer_id: int, name: str, terms: Sequence[Term], *,
               meter_id: int | None = None) -> int:
    """Create a virtual meter, or replace an existing one's name and terms (`meter_id`).

    Raises Invalid for a cycle, double counting, a term that cancels out, no terms, or a
    node or meter outside the customer; Conflict for a name the customer already uses.
    Callers check that `actor` may see the customer (and the meter, when replacing)."""
    name = name.strip()
    if not name:
        raise Invalid("Invalid name", "a virtual meter needs a name", field="name")
    if not terms:
        raise Invalid("No terms", "a virtual meter needs at least one node or meter", field="terms")
    if len(terms) > MAX_TERMS:
        raise Invalid("Too many terms", f"a virtual meter has at most {MAX_TERMS} terms", field="terms")
    try:
        with conn.transaction():
            if meter_id is None:
                row = fetch_one(conn, """INSERT INTO virtual_meters (customer_id, name) VALUES (%s, %s)
                                         RETURNING id""", (customer_id, name))
                assert row is not None
                meter_id = int(row["id"])
                action = "create"
            else:
                row = fetch_one(conn, "SELECT customer_id FROM virtual_meters WHERE id = %s FOR UPDATE",
                                (meter_id,))
                if row is None or row["customer_id"] != customer_id:
                    raise NotFound("virtual meter")
                conn.execute("UPDATE virtual_meters SET name = %s WHERE id = %s", (name, meter_id))
                conn.execute("DELETE FROM virtual_meter_terms WHERE meter_id = %s", (meter_id,))
                action = "update"
            _check_owned(conn, customer_id, terms)
            _check_counting(conn, meter_id, terms)
            with conn.cursor() as cur:
                cur.executemany("""INSERT INTO virtual_meter_terms (meter_id, position, node_id, part_meter_id, sign)
                                   VALUES (%s, %s, %s, %s, %s)""",
                                [(meter_id, k, t.node_id, t.meter_id, t.sign) for k, t in enumerate(terms)])
            audit.record(conn, actor, action, "virtual_meter", meter_id, terms=len(terms))
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(f"the customer already has a virtual meter named {name!r}") from exc
    return meter_id


def delete_meter(conn: Conn, actor: Principal | None, meter_id: int) -> None:
    """Delete a virtual meter that no other meter counts."""
    try:
        with conn.transaction():
            gone = conn.execute("DELETE FROM virtual_meters WHERE id = %s", (meter_id,)).rowcount
            if not gone:
                raise NotFound("virtual meter")
            audit.record(conn, actor, "delete", "virtual_meter", meter_id)
    except psycopg.errors.ForeignKeyViolation as exc:
        if users := counted_by(conn, "part_meter_id", meter_id):
            raise Conflict(f"other virtual meters count this one: {', '.join(users)}; remove it from them "
                           "first") from exc
        rules = [r["name"] for r in fetch_all(conn, "SELECT name FROM alert_rules WHERE virtual_meter_id = %s "
                                                    "ORDER BY name", (meter_id,))]
        raise Conflict(f"alert rules watch this meter: {', '.join(rules)}; delete them first") from exc


def counted_by(conn: Conn, column: Literal["node_id", "part_meter_id"], ident: int) -> list[str]:
    """The names of the meters with a term on this node (`node_id`) or meter (`part_meter_id`)."""
    return [r["name"] for r in fetch_all(conn, sql.SQL("""
        SELECT DISTINCT m.name FROM virtual_meter_terms t JOIN virtual_meters m ON m.id = t.meter_id
        WHERE t.{} = %s ORDER BY m.name""").format(sql.Identifier(column)), (ident,))]


# -- checks --------------------------------------------------------------------------------
def _check_owned(conn: Conn, customer_id: int, terms: Sequence[Term]) -> None:
    nodes = sorted({t.node_id for t in terms if t.node_id is not None})
    found = {r["id"] for r in fetch_all(conn, """SELECT n.id FROM nodes n JOIN sites s ON s.id = n.site_id
                                               WHERE n.id = ANY(%s) AND s.customer_id = %s""",
                                        (nodes, customer_id))}
    if missing := [n for n in nodes if n not in found]:
        raise NotFound(f"node {missing[0]} of this customer", field="terms")
    parts = sorted({t.meter_id for t in terms if t.meter_id is not None})
    found = {r["id"] for r in fetch_all(conn, "SELECT id FROM virtual_meters WHERE id = ANY(%s) AND customer_id = %s",
                                        (parts, customer_id))}
    if missing := [m for m in parts if m not in found]:
        raise NotFound(f"virtual meter {missing[0]} of this customer", field="terms")


def _check_counting(conn: Conn, meter_id: int, terms: Sequence[Term]) -> None:
    """Refuse a cycle, a term that cancels out, and any part of the tree counted twice."""
    weights = _expand(conn, terms, [meter_id])
    if zero := sorted(n for n, w in weights.items() if w == 0):
        raise Invalid("Terms cancel out", f"node {zero[0]} is both added and subtracted: leave it out",
                      field="terms")
    if not weights:
        raise Invalid("No terms", "the meters it counts have no nodes", field="terms")
    ancestry = _ancestry(conn, list(weights))
    name = {r["id"]: f"{r['name']} (node {r['id']})" for r in fetch_all(
        conn, "SELECT id, name FROM nodes WHERE id = ANY(%s)", (list(weights),))}
    for node, weight in weights.items():
        # How often this node's part of the tree counts: its own term and every term above it.
        above = [a for a in ancestry[node] if a in weights]
        total = weight + sum(weights[a] for a in above)
        if total > 1:
            where = f"itself and within {name[above[0]]}" if above else "more than once"
            raise Invalid("Double counting", f"{name[node]} would be added twice ({where}): a node's readings "
                          "already include everything below it", field="terms")
        if total < 0 and above:
            raise Invalid("Double counting", f"{name[node]} would be subtracted twice (itself and within "
                          f"{name[above[0]]})", field="terms")
        if total < 0:
            raise Invalid("Nothing to subtract", f"{name[node]} is subtracted, but no term counts it: a − term "
                          "removes part of a + term above it in the tree", field="terms")


def _expand(conn: Conn, terms: Sequence[Term], chain: list[int]) -> dict[int, int]:
    """node → summed sign over `terms`, through the meters they name. `chain` is the meters
    these terms belong to, outermost first: meeting one of them again is a cycle."""
    weights: dict[int, int] = {}
    for term in terms:
        if term.node_id is not None:
            weights[term.node_id] = weights.get(term.node_id, 0) + term.sign
            continue
        assert term.meter_id is not None
        if term.meter_id in chain:
            names = _names(conn, [*chain[chain.index(term.meter_id):], term.meter_id])
            raise Invalid("Cycle", f"virtual meters would count themselves: {' → '.join(names)}", field="terms")
        parts = [Term(sign=r["sign"], node_id=r["node_id"], meter_id=r["part_meter_id"]) for r in fetch_all(
            conn, """SELECT sign, node_id, part_meter_id FROM virtual_meter_terms WHERE meter_id = %s
                     ORDER BY position""", (term.meter_id,))]
        for node, w in _expand(conn, parts, [*chain, term.meter_id]).items():
            weights[node] = weights.get(node, 0) + term.sign * w
    return weights


def _names(conn: Conn, meter_ids: list[int]) -> list[str]:
    names = {r["id"]: r["name"] for r in fetch_all(conn, "SELECT id, name FROM virtual_meters WHERE id = ANY(%s)",
                                                   (meter_ids,))}
    return [names.get(m, f"meter {m}") for m in meter_ids]


def _ancestry(conn: Conn, nodes: list[int]) -> dict[int, list[int]]:
    """Each node's ancestors, nearest first."""
    out: dict[int, list[int]] = {n: [] for n in nodes}
    for r in fetch_all(conn, """
            WITH RECURSIVE up AS (
                SELECT id AS node_id, parent_id, 1 AS depth FROM nodes WHERE id = ANY(%s)
                UNION ALL
                SELECT up.node_id, n.parent_id, up.depth + 1 FROM up JOIN nodes n ON n.id = up.parent_id
            )
            SELECT node_id, parent_id FROM up WHERE parent_id IS NOT NULL ORDER BY node_id, depth""", (nodes,)):
        out[r["node_id"]].append(r["parent_id"])
    return out


def node_sites(conn: Conn, nodes: Iterable[int]) -> dict[int, int]:
    """node → its site, for a meter's nodes (`expand`)."""
    return {r["id"]: r["site_id"] for r in fetch_all(conn, "SELECT id, site_id FROM nodes WHERE id = ANY(%s)",
                                                     (list(nodes),))}
