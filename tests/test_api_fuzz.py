"""Schemathesis against the app's own OpenAPI schema: no generated request, valid or not,
makes a server error. Every operation in the schema is fuzzed."""

from __future__ import annotations

from typing import Any

import psycopg
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from api.app import create_app
from tests.factories import make_tenant
from wattline.settings import Settings


def test_no_request_makes_a_server_error(db: psycopg.Connection[Any], database_url: str) -> None:
    tenant = make_tenant(db, "F")
    headers = {"Authorization": f"Bearer {tenant.tokens['customer_admin']}"}
    app = create_app(Settings(database_url=database_url), rate_per_s=10_000, burst=10_000)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 25

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            response = case.call(headers=headers)
            case.validate_response(response, checks=[not_a_server_error])

        fuzz()
