"""Schemathesis against the app's own OpenAPI document, with two tenants and every role:
no generated request, valid or not, makes a server error, and every answer conforms to the
document (its status is documented for the route, with the documented content type, body
schema and headers). Path ids are drawn from both tenants' real objects as well as at random,
so the walk crosses tenants. Bounded, and derandomized: every run explores the same cases,
so a run's verdict does not depend on its draw (a finding reproduces on the next run)."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import psycopg
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from tests.factories import Tenant, auth, make_tenant
from wattline.domain import Role
from wattline.settings import Settings

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


def _picker(case: Any) -> Any:
    """Choices that depend only on the case (its operation and generated data)."""
    seed = hashlib.sha256(repr((case.method, case.path, case.path_parameters, case.query, case.body)).encode())
    state = random.Random(seed.digest())
    return lambda n: state.randrange(n)


def real_ids(tenants: list[Tenant]) -> dict[str, list[Any]]:
    ids: dict[str, list[Any]] = {}
    for t in tenants:
        for name, value in (("site_id", t.site_id), ("node_id", t.circuit_id), ("customer_id", t.customer_id),
                            ("bridge_id", t.bridge_id), ("serial", t.sensor_serial), ("rule_id", t.rule_id),
                            ("alert_id", t.alert_id), ("webhook_id", t.webhook_id),
                            ("user_id", t.user_ids["viewer"]), ("key_id", t.key_ids["viewer"])):
            ids.setdefault(name, []).append(value)
    return ids


def test_no_request_makes_a_server_error_or_breaks_the_document(db: psycopg.Connection[Any],
                                                                 database_url: str) -> None:
    tenants = [make_tenant(db, "F"), make_tenant(db, "G")]
    ids = real_ids(tenants)
    app = create_app(Settings(database_url=database_url), rate_per_s=10_000, burst=10_000)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 25
    tokens = [t.tokens[role.value] for t in tenants for role in Role]

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            pick = _picker(case)  # chosen from the case itself, so that Hypothesis can replay it
            for name in list(case.path_parameters or {}):
                if name in ids and pick(10) < 7:  # mostly real objects, of either tenant
                    case.path_parameters[name] = ids[name][pick(len(ids[name]))]
            response = case.call(headers=auth(tokens[pick(len(tokens))]))
            case.validate_response(response, checks=CHECKS)

        fuzz()
