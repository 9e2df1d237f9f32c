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

A worker also finds a pass's sites from what it keeps (`known_spans`, `node_sites`): the
spans of the sensors a kept site lists and the sites of kept nodes, where asking the
database was 7 % of the live worker's wall at the fleet's rate. Those copies may be older
than the pass; the pass reads the catalogues under its sites' locks (`read`), and where
that read loaded anything, decides again from what it just read.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterable
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
    timezone: str
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
    loaded: list[int]  # the sites this read took from the database (new to the worker, or stale)

    def tree(self, site_ids: list[int]) -> Tree:
        """The sites' trees, their rows in node order (as `TREE_ROWS` reads them)."""
        return tree_of(sorted((r for s in site_ids for r in self.tree_rows.get(s, ())), key=lambda r: r[0]))


class SiteCatalogues:
    """Sites' catalogues as one worker keeps them (module docstring), least recently used
    dropped past `max_spans`."""

    def __init__(self, max_spans: int = MAX_SPANS) -> None:
        self.max_spans = max_spans
        self._sites: OrderedDict[int, _Site] = OrderedDict()
        self._listing: dict[int, int] = {}  # sensor -> a kept site whose wiring lists it
        self._node_site: dict[int, int] = {}  # node -> its site, for the kept sites' nodes
        self._database: tuple[str, ...] = ()
        self.reads = 0  # sites read from the database (a kept one is not)

    def _same_database(self, conn: psycopg.Connection[Any]) -> None:
        database = (conn.info.host, str(conn.info.port), conn.info.dbname)
        if database != self._database:  # versions are one database's
            self._sites.clear()
            self._listing.clear()
            self._node_site.clear()
            self._database = database

    def known_spans(self, conn: psycopg.Connection[Any],
                    sensors: Iterable[int]) -> tuple[dict[int, list[Span]], list[int]]:
        """The kept spans of the sensors a kept site lists (all of each one's spans, as that
        site last read them), and the sensors no kept site lists."""
        self._same_database(conn)
        known: dict[int, list[Span]] = {}
        unknown: list[int] = []
        listing, sites = self._listing, self._sites
        for sensor in sensors:
            if (site := listing.get(sensor)) is None:
                unknown.append(sensor)
            else:
                known[sensor] = sites[site].wiring.sensor_spans[sensor]
        return known, unknown

    def node_sites(self, nodes: Iterable[int]) -> tuple[dict[int, int], dict[int, str], list[int]]:
        """Of `nodes`, the kept ones' sites and those sites' time zones, and the nodes of no kept site."""
        node_site: dict[int, int] = {}
        rest: list[int] = []
        kept = self._node_site
        for node in nodes:
            if (site := kept.get(node)) is None:
                rest.append(node)
            else:
                node_site[node] = site
        return node_site, {s: self._sites[s].timezone for s in set(node_site.values())}, rest

    def read(self, conn: psycopg.Connection[Any], site_ids: list[int]) -> Catalogue:
        """The sites' catalogues, read again only where a version has moved."""
        self._same_database(conn)
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
        return Catalogue(wiring, electrics, {s: self._sites[s].tree_rows for s in site_ids}, stale)

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
        timezones: dict[int, str] = dict(fetch_tuples(conn, "SELECT id, timezone FROM sites WHERE id = ANY(%s)",
                                                      (site_ids,)))
        site_of_node = {r[0]: r[2] for r in rows}
        loading = set(site_ids)
        built = {s: _Site({s: versions.get(s, 0)}, timezones[s], [], Wiring(defaultdict(list), {}, set(), set()),
                          {}, 0) for s in site_ids}
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
            if (former := self._sites.get(s)) is not None:
                self._forget(s, former)
            self._sites[s] = site
            self._sites.move_to_end(s)
            self._listing.update(dict.fromkeys(site.wiring.sensor_spans, s))
            self._node_site.update((row[0], s) for row in site.tree_rows)
        self.reads += len(site_ids)

    def _forget(self, site_id: int, site: _Site) -> None:
        """Take a site out of the indexes; a sensor another kept site also lists is then
        unknown until it is read again, which costs one query, not a wrong answer."""
        for sensor in site.wiring.sensor_spans:
            if self._listing.get(sensor) == site_id:
                del self._listing[sensor]
        for row in site.tree_rows:
            if self._node_site.get(row[0]) == site_id:
                del self._node_site[row[0]]

    def _bound(self, keep: int) -> None:
        """Drop the least recently used sites past `max_spans`, never the `keep` newest."""
        total = sum(site.spans for site in self._sites.values())
        while total > self.max_spans and len(self._sites) > keep:
            site_id, site = self._sites.popitem(last=False)
            self._forget(site_id, site)
            total -= site.spans
