"""The audit log of reads and changes of personal data. Entries name fields, never their
values, so that the log itself holds no personal data to erase."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from wattline.principal import Principal


def record(conn: psycopg.Connection[Any], actor: Principal | None, action: str, subject_type: str,
           subject_id: int | str, **detail: Any) -> None:
    """Append an entry: who (`actor`, None for the system), did what, to which subject."""
    conn.execute("""INSERT INTO audit_log (actor_user_id, actor_key_id, action, subject_type, subject_id, detail)
                    VALUES (%s, %s, %s, %s, %s, %s)""",
                 (actor.user_id if actor and actor.user_id else None, actor.key_id if actor else None, action,
                  subject_type, str(subject_id), Jsonb(detail)))
