"""Vehicle positions: the newest fix per vehicle of a city, and one vehicle's track."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from psycopg.rows import dict_row

from nakhon.api.database import Conn

_LATEST = """
SELECT DISTINCT ON (vehicle_id) vehicle_id, time, lat, lon, speed_kmh, heading
FROM positions
WHERE city = %(city)s AND time > now() - %(max_age)s
  AND (%(after)s::text IS NULL OR vehicle_id > %(after)s::text)
ORDER BY vehicle_id, time DESC
LIMIT %(limit)s
"""

_TRACK = """
SELECT time, lat, lon, speed_kmh, heading
FROM positions
WHERE vehicle_id = %(vehicle)s AND time >= %(start)s AND time < %(end)s
  AND (%(visible)s::text[] IS NULL OR city = ANY(%(visible)s::text[]))
  AND (%(after)s::timestamptz IS NULL OR time > %(after)s::timestamptz)
ORDER BY time
LIMIT %(limit)s
"""


async def latest_positions(
    conn: Conn, city: str, max_age: timedelta, after: str | None, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` + 1 vehicles (the extra one tells whether a next page exists)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _LATEST, {"city": city, "max_age": max_age, "after": after, "limit": limit + 1}
        )
        return await cur.fetchall()


async def track(
    conn: Conn,
    vehicle_id: str,
    start: datetime,
    end: datetime,
    after: datetime | None,
    limit: int,
    visible: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _TRACK,
            {
                "vehicle": vehicle_id,
                "start": start,
                "end": end,
                "after": after,
                "limit": limit + 1,
                "visible": sorted(visible) if visible is not None else None,
            },
        )
        return await cur.fetchall()


async def vehicle_seen(conn: Conn, vehicle_id: str, cities: frozenset[str]) -> bool:
    """Whether the vehicle has any stored position in one of ``cities``."""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM positions WHERE vehicle_id = %s AND city = ANY(%s))",
        (vehicle_id, sorted(cities)),
    )
    row = await cur.fetchone()
    return bool(row and row[0])
