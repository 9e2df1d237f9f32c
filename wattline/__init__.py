"""Wattline's shared core: settings, database access, migrations, the domain model and the wire contract."""

from pathlib import Path

__version__ = "0.1.0"

#: The repository root (holds `sql/`, `scripts/`). Wattline runs from a checkout or an
#: editable install, so the migrations live beside the packages rather than inside them.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
