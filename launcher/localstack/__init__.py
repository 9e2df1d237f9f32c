"""The embedded services: a project-managed PostgreSQL + TimescaleDB and Mosquitto.

Used by `wattline up` (under the project's data folder) and by the test fixtures (in a
temporary folder on free ports). Both start real servers; nothing here is a fake.
"""

from launcher.localstack.mosquitto import LocalMosquitto
from launcher.localstack.postgres import LocalPostgres
from launcher.localstack.software import ensure_installed, free_port, missing_software

__all__ = ["LocalMosquitto", "LocalPostgres", "ensure_installed", "free_port", "missing_software"]
