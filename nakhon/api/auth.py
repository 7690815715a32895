"""Who is asking, and what may they read: API keys from the ``api_keys`` table.

Every /v1 request resolves to a :class:`~nakhon.api.keys.Grant` (cities and
scopes) or an error: no, malformed, unknown, expired or revoked key -> 401;
past the key's rate -> 429 with ``Retry-After``; a route outside the key's
scopes -> 403 (routes call :func:`require`). Another city's objects are the
routes' business: 404, as if they did not exist.

Closed by default: ``nakhon api`` refuses to start while no key is active
and ``public`` is off (:mod:`nakhon.api.command`); should every key be
revoked later, every /v1 request is 401. ``public`` serves requests without
a key with ``public_scopes`` over every city; a request that does send a key
is still checked (a bad key is 401, never silently public).

Keys are cached per process for ``key_cache_s`` seconds (a revocation takes
effect within that), unknown ids too, so the same made-up key sent again and
again costs one query per ``key_cache_s``. The key is never logged.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from psycopg_pool import AsyncConnectionPool

from nakhon.api.database import Conn
from nakhon.api.errors import ApiError
from nakhon.api.key_store import find_api_key
from nakhon.api.keys import Grant, StoredKey, key_matches, parse_key_id
from nakhon.api.rate_limit import RateLimiter

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

_UNAUTHORIZED = "missing, unknown, expired or revoked API key in header X-API-Key"


@dataclass(slots=True)
class KeyCache:
    """Rows by key id (None: no such key), for ``ttl`` seconds."""

    ttl: float
    _rows: dict[str, tuple[float, StoredKey | None]] = field(default_factory=dict)

    async def row(self, pool: AsyncConnectionPool[Conn], key_id: str) -> StoredKey | None:
        now = time.monotonic()
        hit = self._rows.get(key_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with pool.connection() as conn:
            found = await find_api_key(conn, key_id)
        if len(self._rows) > 10_000:
            self._rows.clear()
        self._rows[key_id] = (now + self.ttl, found)
        return found


@dataclass(slots=True)
class Authenticator:
    """The app's key checking, held in ``app.state.auth``."""

    cache: KeyCache
    limiter: RateLimiter
    public_scopes: frozenset[str] | None  # None: not public

    async def grant_for(self, request: Request, key: str | None) -> Grant:
        pool: AsyncConnectionPool[Conn] = request.app.state.pool
        if key is None:
            if self.public_scopes is not None:
                client = request.client.host if request.client else "unknown"
                self._limit(f"public:{client}")
                return Grant(None, None, self.public_scopes)
            raise ApiError(401, "unauthorized", _UNAUTHORIZED)
        key_id = parse_key_id(key)
        if key_id is None:
            raise ApiError(401, "unauthorized", _UNAUTHORIZED)
        row = await self.cache.row(pool, key_id)
        valid = row is not None and key_matches(key, row.key_hash)
        if row is None or not valid or not row.active_at(datetime.now(UTC)):
            raise ApiError(401, "unauthorized", _UNAUTHORIZED)
        self._limit(key_id)
        return row.grant()

    def _limit(self, client: str) -> None:
        wait = self.limiter.check(client, time.monotonic())
        if wait:
            raise ApiError(
                429,
                "rate_limited",
                f"too many requests for this key; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )


async def authenticate(request: Request, key: str | None = Security(api_key_header)) -> Grant:
    """The /v1 router's dependency: the request's grant, kept in ``request.state.grant``."""
    auth: Authenticator = request.app.state.auth
    grant = await auth.grant_for(request, key)
    request.state.grant = grant
    return grant


def require(scope: str) -> Callable[[Request], Awaitable[Grant]]:
    """A route dependency: the request's grant, if it holds ``scope`` (else 403)."""

    async def dependency(request: Request) -> Grant:
        grant: Grant = request.state.grant
        if scope not in grant.scopes:
            raise ApiError(403, "forbidden", f"this API key lacks the scope {scope!r}")
        return grant

    return dependency


def check_city(grant: Grant, city: str) -> None:
    """404 for a city outside the grant: the same answer as for a city that does not exist."""
    if not grant.sees_city(city):
        raise ApiError(404, "not_found", f"no city {city!r}")
