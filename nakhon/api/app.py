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
from nakhon.api.auth import require_api_key
from nakhon.api.database import build_pool
from nakhon.api.errors import install_error_handlers
from nakhon.api.metrics import ApiMetrics, install_metrics
from nakhon.api.routes import aqi, health, sensors, series, vehicles
from nakhon.config import Settings

DESCRIPTION = """
Time series of a city's sensors and vehicles, for city apps.

When the server has API keys configured, every `/v1` request needs one in
the `X-API-Key` header. Errors are JSON: `{"error": {"code", "message"}}`.
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
    app.state.api_keys = [k.get_secret_value().encode() for k in settings.api.api_keys]
    app.state.max_points = settings.api.max_points
    app.state.raw_retention = timedelta(days=settings.retention.readings_days)
    app.state.metrics = ApiMetrics(CollectorRegistry(auto_describe=True))

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])
    for module in (sensors, series, aqi, vehicles):
        v1.include_router(module.router)
    app.include_router(health.router)
    app.include_router(v1)
    install_error_handlers(app)
    install_metrics(app, app.state.metrics)
    return app
