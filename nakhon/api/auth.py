"""API keys: enforced on /v1 when any is configured; the local demo may run open."""

from __future__ import annotations

import hmac

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from nakhon.api.errors import ApiError

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def require_api_key(request: Request, key: str | None = Security(api_key_header)) -> None:
    """Accept the request if no keys are configured or ``X-API-Key`` matches one.

    Compared in constant time, against every key, so timing tells nothing.
    """
    keys: list[bytes] = request.app.state.api_keys
    if not keys:
        return
    given = (key or "").encode()
    matched = False
    for k in keys:
        matched |= hmac.compare_digest(given, k)
    if not matched:
        raise ApiError(401, "unauthorized", "missing or unknown API key in header X-API-Key")
