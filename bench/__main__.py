"""`python -m bench [SUITE ...]` (suites below; none: all of them): run benchmarks, print one table.

Every ratio in the table compares figures measured in the same run on the same machine;
absolute numbers move with whatever else the (shared) machine is doing.
"""

from __future__ import annotations

import os
import secrets
import sys

from bench.common import Row, print_table

SUITES = ("rollup", "ingest", "api", "dashboard", "scaleout", "soak", "packing", "packsize", "exports", "rolluploop",
          "fleet", "virtualmeters", "emissions", "sparkplug", "fleetminute", "readingsindex",
          "hotread")


def main(argv: list[str]) -> None:
    chosen = argv or list(SUITES)
    unknown = set(chosen) - set(SUITES)
    if unknown:
        raise SystemExit(f"unknown bench {sorted(unknown)}; choose from {SUITES}")
    # Services the benches start refuse known default secrets, as production does.
    os.environ.setdefault("WATTLINE_SECRET_KEY", secrets.token_urlsafe(32))
    rows: list[Row] = []
    for name in chosen:
        module = __import__(f"bench.{name}", fromlist=["run"])
        rows += module.run()
    print_table(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
