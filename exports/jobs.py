"""Export jobs and their runs: create, change, delete, list; each write audited.

An HTTPS job gets a signing secret (shown once, like a webhook's). An SFTP job gets an
Ed25519 key pair made here: its public half goes in the server's `authorized_keys`, its
private half never leaves Wattline. The server's host key is pinned at the first connection
(or given when the job is made), so a server that changes its key is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from wattline import audit
from wattline.db import fetch_all, fetch_one
from wattline.errors import Invalid, NotFound
from wattline.outbound import parse_destination
from wattline.principal import Principal
from wattline.queries import scope
from wattline.signing import new_secret

Conn = psycopg.Connection[Any]
JOB_COLUMNS = ("j.id, j.customer_id, j.name, j.site_ids, j.node_ids, j.resolution, j.format, j.schedule, "
               "j.include_catalog, j.include_emissions, j.destination, j.url, j.sftp_host, j.sftp_port, "
               "j.sftp_username, j.sftp_path, j.sftp_public_key, j.sftp_host_key, j.enabled, j.created_at, "
               "j.last_error, j.failing_since")


@dataclass(frozen=True)
class JobSpec:
    """What a job exports, when and where (validated by `create_job`)."""

    name: str
    resolution: Literal["15m", "1h", "1d"]
    format: Literal["csv", "json"]
    schedule: Literal["daily", "weekly", "monthly"]
    destination: Literal["https", "sftp"]
    site_ids: tuple[int, ...] = ()
    node_ids: tuple[int, ...] = ()
    include_catalog: bool = False
    url: str | None = None
    sftp_host: str | None = None
    sftp_port: int = 22
    sftp_username: str | None = None
    sftp_path: str = "."
    sftp_host_key: str | None = None
    include_emissions: bool = False


@dataclass(frozen=True)
class Created:
    """A new job, with what is shown once: the HTTPS signing secret or the SFTP public key."""

    id: int
    secret: str | None
    public_key: str | None


def _key_pair() -> tuple[str, str]:
    # Imported when an SFTP job is made: the API should not carry cryptography's ~7 MB for it.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} wattline-export"


def _check_scope(conn: Conn, customer_id: int, spec: JobSpec) -> None:
    if spec.site_ids:
        found = fetch_all(conn, "SELECT id FROM sites WHERE id = ANY(%s) AND customer_id = %s",
                          (list(spec.site_ids), customer_id))
        if len(found) != len(set(spec.site_ids)):
            raise NotFound("site", field="site_ids")
    if spec.node_ids:
        found = fetch_all(conn, """SELECT n.id FROM nodes n JOIN sites s ON s.id = n.site_id
                                   WHERE n.id = ANY(%s) AND s.customer_id = %s""", (list(spec.node_ids), customer_id))
        if len(found) != len(set(spec.node_ids)):
            raise NotFound("node", field="node_ids")


def create_job(conn: Conn, actor: Principal, customer_id: int, spec: JobSpec, *, allow_private: bool) -> Created:
    """A new job for the customer (the caller has checked the actor may act for it)."""
    if not spec.name.strip():
        raise Invalid("Invalid export", "give the job a name", field="name")
    secret = public = private = None
    if spec.destination == "https":
        if not spec.url:
            raise Invalid("Invalid export", "an HTTPS job needs a URL", field="url")
        if parse_destination(spec.url, allow_private=allow_private).scheme != "https":
            raise Invalid("Invalid export", "exports go over HTTPS only", field="url")
        secret = new_secret()
    else:
        if not spec.sftp_host or not spec.sftp_username:
            raise Invalid("Invalid export", "an SFTP job needs a host and a user name", field="sftp_host")
        private, public = _key_pair()
    with conn.transaction():
        _check_scope(conn, customer_id, spec)
        row = fetch_one(conn, """
            INSERT INTO export_jobs (customer_id, name, site_ids, node_ids, resolution, format, schedule,
                                     include_catalog, destination, url, secret, sftp_host, sftp_port, sftp_username,
                                     sftp_path, sftp_private_key, sftp_public_key, sftp_host_key, created_by,
                                     include_emissions)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                        (customer_id, spec.name.strip(), sorted(set(spec.site_ids)), sorted(set(spec.node_ids)),
                         spec.resolution, spec.format, spec.schedule, spec.include_catalog, spec.destination,
                         spec.url, secret, spec.sftp_host, spec.sftp_port if spec.destination == "sftp" else None,
                         spec.sftp_username, spec.sftp_path if spec.destination == "sftp" else None, private, public,
                         spec.sftp_host_key, actor.user_id or None, spec.include_emissions))
        assert row is not None
        audit.record(conn, actor, "create", "export_job", row["id"], destination=spec.destination)
    return Created(int(row["id"]), secret, public)


def jobs(conn: Conn, p: Principal, customer_id: int) -> list[dict[str, Any]]:
    """A customer's jobs (never their secrets or private keys)."""
    where, params = scope(p, sites=None)
    return fetch_all(conn, sql.SQL("""SELECT {cols} FROM export_jobs j JOIN customers c ON c.id = j.customer_id
                                      WHERE j.customer_id = %(customer)s AND {where} ORDER BY j.id""").format(
        cols=sql.SQL(JOB_COLUMNS), where=where), {**params, "customer": customer_id})


def job(conn: Conn, p: Principal, job_id: int) -> dict[str, Any] | None:
    """One job the principal may see, or None."""
    where, params = scope(p, sites=None)
    return fetch_one(conn, sql.SQL("""SELECT {cols} FROM export_jobs j JOIN customers c ON c.id = j.customer_id
                                      WHERE j.id = %(id)s AND {where}""").format(
        cols=sql.SQL(JOB_COLUMNS), where=where), {**params, "id": job_id})


def set_enabled(conn: Conn, actor: Principal, job_id: int, enabled: bool) -> None:
    """Pause or resume a job (a resumed job catches up on the periods it missed)."""
    with conn.transaction():
        conn.execute("UPDATE export_jobs SET enabled = %s WHERE id = %s", (enabled, job_id))
        audit.record(conn, actor, "enable" if enabled else "disable", "export_job", job_id)


def delete_job(conn: Conn, actor: Principal, job_id: int) -> None:
    """Delete a job and its history."""
    with conn.transaction():
        conn.execute("DELETE FROM export_jobs WHERE id = %s", (job_id,))
        audit.record(conn, actor, "delete", "export_job", job_id)


def runs(conn: Conn, job_id: int, *, limit: int = 200) -> list[dict[str, Any]]:
    """A job's history: each run with its period, rows, bytes, status and error, newest first."""
    return fetch_all(conn, """SELECT id, kind, site_id, period_start, period_end, status, attempts, next_attempt_at,
                                     file_name, rows, bytes, error, created_at, delivered_at
                              FROM export_runs WHERE job_id = %s ORDER BY period_start DESC, id DESC LIMIT %s""",
                     (job_id, limit))
