"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import openapi, problems
from api.limits import ProtectionMiddleware, RateLimits, TokenBucket
from api.routes import (
    alerts,
    auth,
    catalogue,
    commissioning,
    data,
    emissions,
    exports,
    health,
    people,
    privacy,
    tariff_editor,
    virtual_meters,
    weather,
)
from wattline.accounts import FailureBudget
from wattline.db import make_pool
from wattline.settings import Settings, get_settings

DESCRIPTION = """
Wattline's REST API for resellers, installers and facility managers.

Authenticate with `Authorization: Bearer <token>`: a token from `POST /v1/auth/login`, or an
API key from `POST /v1/api-keys` (shown once; stored only as a hash). Objects of another
tenant answer 404, exactly like objects that do not exist. Errors are RFC 9457 problem
details. Each key is rate limited (429 with Retry-After).
"""


#: Requests whose credentials fail: 30 at once from an address, then one every 2 s.
UNVERIFIED_BURST = 30
UNVERIFIED_RATE_PER_S = 0.5


def create_app(settings: Settings | None = None, *, rate_per_s: float = 50.0, burst: int = 200,
               max_body_bytes: int = 2_000_000) -> FastAPI:
    """The API over the database of `settings` (default: the process's settings)."""
    settings = settings or get_settings()
    url = settings.require_database_url()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            app.state.pool.close()

    app = FastAPI(title="Wattline API", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    # Opened here, not in the lifespan, so that ASGI test clients without one work too;
    # it connects in the background, so the API starts even while the database is down.
    app.state.pool = make_pool(url, max_size=settings.api_pool_size, name="api", wait=False)
    problems.install(app)
    openapi.install(app)
    for module in (health, auth, people, catalogue, tariff_editor, commissioning, data, virtual_meters, weather,
                   emissions, alerts, exports, privacy):
        app.include_router(module.router)
    app.state.limits = RateLimits(keys=TokenBucket(rate_per_s, burst),
                                  unverified=FailureBudget(UNVERIFIED_BURST, UNVERIFIED_RATE_PER_S))
    app.add_middleware(ProtectionMiddleware, max_body_bytes=max_body_bytes, rate_per_s=rate_per_s, burst=burst)
    return app
