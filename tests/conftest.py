"""The test suite's plugins: real services, a real gateway, the API client and tenants,
and the session-end log-hygiene check. Shared builders and helpers are in tests/factories.py."""

pytest_plugins = [
    "tests.fixtures.log_hygiene",
    "tests.fixtures.services",
    "tests.fixtures.gateway",
    "tests.fixtures.api",
    "tests.fixtures.receivers",
    "tests.fixtures.netfault",
    "tests.fixtures.browser",
]
