"""Probes and metrics: outside /v1, never behind the API key."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import AsyncConnectionPool

from nakhon.api.database import Conn
from nakhon.api.errors import ApiError
from nakhon.api.models import ErrorBody, Health

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="The database answers",
    responses={503: {"model": ErrorBody}},
)
async def readyz(request: Request) -> Health:
    pool: AsyncConnectionPool[Conn] = request.app.state.pool
    try:
        async with pool.connection(timeout=2.0) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # any failure means not ready; the details stay in our log
        log.warning("readiness check failed: %s", exc)
        raise ApiError(503, "not_ready", "the database is not reachable") from exc
    return Health(status="ready")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
