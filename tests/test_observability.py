"""The example Grafana dashboard only queries metrics our services export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import alerts.scheduler  # noqa: F401 - registers the scheduler's metrics
import ingest.metrics  # noqa: F401 - registers the gateway's metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"


def test_every_dashboard_query_names_an_exported_metric() -> None:
    families = list(REGISTRY.collect())
    # Labelled metrics have no samples until first used: count their family names too.
    exported = {s.name for m in families for s in m.samples} | {f"{m.name}_total" for m in families
                                                                if m.type == "counter"}
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"wattline_[a-z_]+", e)}
    assert names and names <= exported, names - exported
