"""The API's app factory: ``create_app(settings)`` builds a fresh app.

Nothing is built at import time: the pool, the metrics registry and the
settings belong to one app instance, so tests and ``nakhon api`` each make
their own. The pool opens in the lifespan without waiting for the database:
the process starts (``/healthz``) even while the database is down, and
``/readyz`` says when it is back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import APIRouter, Depends, FastAPI
from prometheus_client import CollectorRegistry

from nakhon import __version__
from nakhon.api.auth import Authenticator, KeyCache, authenticate
from nakhon.api.database import build_pool, heavy_slots
from nakhon.api.errors import install_error_handlers
from nakhon.api.keys import parse_scopes
from nakhon.api.metrics import ApiMetrics, install_metrics
from nakhon.api.rate_limit import RateLimiter
from nakhon.api.routes import aqi, export, health, sensors, series, vehicles
from nakhon.config import Settings

DESCRIPTION = """
Time series of a city's sensors and vehicles, for city apps.

Every `/v1` request needs an API key in the `X-API-Key` header (unless the
operator runs the API in public mode). A key reads only its cities (another
city's objects are 404) and scopes (403); 401 for a missing, unknown, expired
or revoked key; 429 with `Retry-After` past the key's rate.
Errors are JSON: `{"error": {"code", "message"}}`.
"""


def create_app(settings: Settings) -> FastAPI:
    pool = build_pool(settings.db, settings.api)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=False)
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="Nakhon city data API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.pool = pool
    api = settings.api
    app.state.auth = Authenticator(
        cache=KeyCache(api.key_cache_s),
        limiter=RateLimiter(api.rate_per_s, api.rate_burst),
        public_scopes=parse_scopes(api.public_scopes) if api.public else None,
    )
    app.state.heavy_slots = heavy_slots(settings.db, api)
    app.state.pool_timeout_s = settings.db.pool_timeout_s
    app.state.max_points = api.max_points
    app.state.max_range = timedelta(days=api.max_range_days)
    app.state.raw_retention = timedelta(days=settings.retention.readings_days)
    app.state.metrics = ApiMetrics(CollectorRegistry(auto_describe=True))

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authenticate)])
    for module in (sensors, series, aqi, vehicles, export):
        v1.include_router(module.router)
    app.include_router(health.router)
    app.include_router(v1)
    install_error_handlers(app)
    install_metrics(app, app.state.metrics)
    return app
