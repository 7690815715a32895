"""The API's connection pool and the per-request connection dependency.

Connections are read-only, autocommit, in UTC, with a statement timeout: a
city app can neither write nor pin a connection with a runaway query.
``max_waiting`` bounds the queue for connections, so overload turns into
quick 503s instead of a pile of requests waiting for ever.

Heavy routes (series, AQI, vehicles) take a connection through
:func:`heavy_connection`: at most ``heavy_requests`` of them hold one at a
time, so however many slow requests arrive, the rest of the pool stays free
for cheap ones (a sensor, the list of cities). The wait for a heavy slot is
bounded like the pool's: past ``pool_timeout_s``, 503 busy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from nakhon.api.errors import ApiError
from nakhon.config import ApiSettings, DbSettings

Conn = AsyncConnection[tuple[object, ...]]


def build_pool(db: DbSettings, api: ApiSettings) -> AsyncConnectionPool[Conn]:
    """A closed pool; the app's lifespan opens it (never at import time)."""
    timeout_ms = int(api.statement_timeout_s * 1000)
    return AsyncConnectionPool(
        db.service_dsn("api"),  # nakhon_reader: SELECT only, by grants
        min_size=db.pool_min,
        max_size=db.pool_max,
        max_waiting=api.pool_max_waiting,
        timeout=db.pool_timeout_s,
        open=False,
        name="nakhon-api",
        kwargs={
            "autocommit": True,
            "options": (
                f"-c statement_timeout={timeout_ms} -c default_transaction_read_only=on"
                " -c TimeZone=UTC -c application_name=nakhon-api"
            ),
        },
    )


async def connection(request: Request) -> AsyncIterator[Conn]:
    pool: AsyncConnectionPool[Conn] = request.app.state.pool
    async with pool.connection() as conn:
        yield conn


def heavy_slots(db: DbSettings, api: ApiSettings) -> asyncio.Semaphore:
    return asyncio.Semaphore(api.heavy_requests or max(1, db.pool_max - 1))


async def heavy_connection(request: Request) -> AsyncIterator[Conn]:
    slots: asyncio.Semaphore = request.app.state.heavy_slots
    try:
        await asyncio.wait_for(slots.acquire(), request.app.state.pool_timeout_s)
    except TimeoutError:
        raise ApiError(503, "busy", "too many heavy requests at once; retry") from None
    try:
        pool: AsyncConnectionPool[Conn] = request.app.state.pool
        async with pool.connection() as conn:
            yield conn
    finally:
        slots.release()
