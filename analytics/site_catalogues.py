"""What a rollup pass reads of its sites' catalogues, kept between passes.

A pass needs, for each of its sites, the electrical tree, who measures what (`Wiring`:
every assignment span of every sensor ever assigned there, the meters, the generating
nodes) and the electrical parameters of the nodes those spans name. They change only when
someone edits the catalogue, yet reading them again each pass was 37 % of the time the
rollup worker's statements took in PostgreSQL at 100,000 readings/s (pg_stat_statements:
250,000 spans a pass, and the electrical parameters walked up each tree). So a worker keeps
each site's and reads it again only when a version it was read at has moved.

Every write to nodes, assignments or a sensor's `reports_power` takes a new version for
each site it touches, by trigger in the writing transaction (`sql/040_...`); a change to
any span of a sensor moves every site the sensor was ever assigned at, since each of those
keeps all its spans. A pass reads the versions before anything they guard, so a kept copy
is at least as new as the versions it is filed under: a write that lands in between is
read again at the next pass, never missed.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Any

import psycopg

from analytics.hierarchy import TREE_ROWS, Tree, TreeRow, tree_of
from wattline.db import fetch_tuples
from wattline.electrical import Electrical, electrical

Span = tuple[int, int, float, float]  # (sensor, node, valid from, valid to) in epoch seconds, ±inf open

#: At most this many spans kept (about 400 bytes each, as Python objects): 1.5 million is
#: a fleet of 1,000 sites of 1,500 sensors. The sites used longest ago go first.
MAX_SPANS = 1_500_000


@dataclass
class Wiring:
    """Who measures what at a pass's sites: every assignment span of every sensor ever
    assigned there (by node, and by sensor wherever it was), the meters that report signed
    power, and the generating nodes."""

    node_spans: dict[int, list[Span]]
    sensor_spans: dict[int, list[Span]]
    meters: set[int]
    generating: set[int]


@dataclass
class _Site:
    versions: dict[int, int]  # this site and every site its sensors' spans reach, as read
    tree_rows: list[TreeRow]
    wiring: Wiring
    electrics: dict[int, Electrical]  # the nodes its spans name
    spans: int


@dataclass
class Catalogue:
    """A pass's sites' catalogues: their wiring and span nodes' parameters, and their trees."""

    wiring: Wiring
    electrics: dict[int, Electrical]
    tree_rows: dict[int, list[TreeRow]]

    def tree(self, site_ids: list[int]) -> Tree:
        """The sites' trees, their rows in node order (as `TREE_ROWS` reads them)."""
        return tree_of(sorted((r for s in site_ids for r in self.tree_rows.get(s, ())), key=lambda r: r[0]))


class SiteCatalogues:
    """Sites' catalogues as one worker keeps them (module docstring), least recently used
    dropped past `max_spans`."""

    def __init__(self, max_spans: int = MAX_SPANS) -> None:
        self.max_spans = max_spans
        self._sites: OrderedDict[int, _Site] = OrderedDict()
        self._database: tuple[str, ...] = ()
        self.reads = 0  # sites read from the database (a kept one is not)

    def read(self, conn: psycopg.Connection[Any], site_ids: list[int]) -> Catalogue:
        """The sites' catalogues, read again only where a version has moved."""
        database = (conn.info.host, str(conn.info.port), conn.info.dbname)
        if database != self._database:  # versions are one database's
            self._sites.clear()
            self._database = database
        kept = [self._sites[s] for s in site_ids if s in self._sites]
        watched = sorted({s for site in kept for s in site.versions} | set(site_ids))
        versions = dict(fetch_tuples(conn, "SELECT site_id, version FROM site_catalogue_versions "
                                           "WHERE site_id = ANY(%s)", (watched,)))
        stale = [s for s in site_ids if s not in self._sites or any(
            versions.get(other, 0) != v for other, v in self._sites[s].versions.items())]
        if stale:
            self._load(conn, stale)
        for s in site_ids:
            self._sites.move_to_end(s)
        self._bound(keep=len(site_ids))
        wiring = Wiring({}, {}, set(), set())
        electrics: dict[int, Electrical] = {}
        for s in site_ids:
            site = self._sites[s]
            wiring.node_spans.update(site.wiring.node_spans)
            wiring.sensor_spans.update(site.wiring.sensor_spans)
            wiring.meters |= site.wiring.meters
            wiring.generating |= site.wiring.generating
            electrics.update(site.electrics)
        return Catalogue(wiring, electrics, {s: self._sites[s].tree_rows for s in site_ids})

    def _load(self, conn: psycopg.Connection[Any], site_ids: list[int]) -> None:
        # Every site's version first (a span may reach any site), then what they guard.
        versions: dict[int, int] = dict(fetch_tuples(conn, "SELECT site_id, version FROM site_catalogue_versions"))
        rows: list[TreeRow] = [(int(n), None if p is None else int(p), int(s), bool(m), bool(g))
                               for n, p, s, m, g in fetch_tuples(conn, TREE_ROWS, (site_ids,))]
        spans_of: dict[int, list[Span]] = defaultdict(list)
        sites_of: dict[int, set[int]] = defaultdict(set)  # a sensor's sites, of any of its spans
        meters: set[int] = set()
        for sensor, node, start, end, site, reports_power in fetch_tuples(conn, """
                SELECT a.sensor_id, a.node_id, extract(epoch FROM a.valid_from)::float8,
                       extract(epoch FROM a.valid_to)::float8, n.site_id, s.reports_power
                FROM sensor_assignments a JOIN sensors s ON s.id = a.sensor_id JOIN nodes n ON n.id = a.node_id
                WHERE a.sensor_id IN (SELECT b.sensor_id FROM sensor_assignments b JOIN nodes m ON m.id = b.node_id
                                      WHERE m.site_id = ANY(%s))
                ORDER BY a.sensor_id, a.valid_from""", (site_ids,)):
            spans_of[int(sensor)].append((int(sensor), int(node), float(start), float(end)))
            sites_of[int(sensor)].add(int(site))
            if reports_power:
                meters.add(int(sensor))
        params = electrical(conn, sorted({sp[1] for spans in spans_of.values() for sp in spans}))
        site_of_node = {r[0]: r[2] for r in rows}
        loading = set(site_ids)
        built = {s: _Site({s: versions.get(s, 0)}, [], Wiring(defaultdict(list), {}, set(), set()), {}, 0)
                 for s in site_ids}
        for row in rows:
            built[row[2]].tree_rows.append(row)
            if row[4]:
                built[row[2]].wiring.generating.add(row[0])
        for sensor, spans in spans_of.items():
            for s in sites_of[sensor] & loading:
                site = built[s]
                site.wiring.sensor_spans[sensor] = spans
                site.spans += len(spans)
                site.versions.update((other, versions.get(other, 0)) for other in sites_of[sensor])
                if sensor in meters:
                    site.wiring.meters.add(sensor)
                for span in spans:
                    if site_of_node.get(span[1]) == s:
                        site.wiring.node_spans[span[1]].append(span)
                    if span[1] in params:
                        site.electrics[span[1]] = params[span[1]]
        for s, site in built.items():
            site.wiring.node_spans = dict(site.wiring.node_spans)
            self._sites[s] = site
            self._sites.move_to_end(s)
        self.reads += len(site_ids)

    def _bound(self, keep: int) -> None:
        """Drop the least recently used sites past `max_spans`, never the `keep` newest."""
        total = sum(site.spans for site in self._sites.values())
        while total > self.max_spans and len(self._sites) > keep:
            _, site = self._sites.popitem(last=False)
            total -= site.spans
