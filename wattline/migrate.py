"""Ordered, idempotent schema migrations from `sql/NNN_name.sql`, recorded in `schema_migrations`.

Each file runs in its own transaction under an advisory lock, so concurrent starts
(several gateways, a test run) apply each file once. A file that changed after it ran
is refused rather than silently skipped: migrations are append-only history.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg

from wattline import PROJECT_ROOT

MIGRATIONS_DIR = PROJECT_ROOT / "sql"
_LOCK_KEY = 0x7761_746C  # "watl"


class MigrationError(RuntimeError):
    """A migration that cannot be applied, or that changed after it ran."""
    pass


@dataclass(frozen=True)
class Migration:
    """One file of `sql/`, identified by its version (the file name's stem)."""
    version: str
    path: Path

    @property
    def sql(self) -> str:
        """The file's SQL text."""
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        """SHA-256 of the file, recorded when it ran."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files of `directory`, in version order."""
    files = sorted(p for p in directory.glob("*.sql") if p.name[:3].isdigit())
    versions = [p.stem for p in files]
    if len({v[:3] for v in versions}) != len(versions):
        raise MigrationError(f"two migrations share a number in {directory}")
    return [Migration(p.stem, p) for p in files]


def migrate(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what has not run yet. Returns the versions applied now (empty: nothing to do)."""
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version text PRIMARY KEY,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done: dict[str, str] = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
            for migration in discover(directory):
                recorded = done.get(migration.version)
                if recorded is not None:
                    if recorded != migration.checksum:
                        raise MigrationError(
                            f"{migration.path.name} changed after it was applied; "
                            "add a new migration instead of editing an old one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                        (migration.version, migration.checksum),
                    )
                applied_now.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
