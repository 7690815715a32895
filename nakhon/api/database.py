"""The API's connection pool and the per-request connection dependency.

Connections are read-only, autocommit, in UTC, with a statement timeout: a
city app can neither write nor pin a connection with a runaway query.
``max_waiting`` bounds the queue for connections, so overload turns into
quick 503s instead of a pile of requests waiting for ever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from nakhon.config import ApiSettings, DbSettings

Conn = AsyncConnection[tuple[object, ...]]


def build_pool(db: DbSettings, api: ApiSettings) -> AsyncConnectionPool[Conn]:
    """A closed pool; the app's lifespan opens it (never at import time)."""
    timeout_ms = int(api.statement_timeout_s * 1000)
    return AsyncConnectionPool(
        db.dsn.get_secret_value(),
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
