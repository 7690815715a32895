"""Cities and sensors: the registry, filtered and paged by key (never OFFSET)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from nakhon.api.database import Conn
from nakhon.api.params import BBox, Near

#: Mean Earth radius (IUGG), metres.
EARTH_RADIUS_M = 6_371_008.8
_M_PER_DEG_LAT = 111_320.0

# The registry alone: the writer moves each sensor's last_seen forward with
# every batch it stores (nakhon/storage/writer.py), so a city's newest reading
# is its sensors' latest last_seen (vehicles' positions aside). Looking it up
# in readings instead walked the whole time index for a city that has
# registered sensors but no readings, on every call.
_CITIES = """
SELECT city, count(*) AS sensors,
       max(last_seen) FILTER (WHERE kind IS DISTINCT FROM 'vehicle') AS last_reading
FROM sensors
WHERE %(cities)s::text[] IS NULL OR city = ANY(%(cities)s::text[])
GROUP BY city
ORDER BY city
"""

_SENSOR_COLUMNS = sql.SQL(
    "s.sensor_id, s.city, s.kind, s.name, s.lat, s.lon, s.metadata, s.first_seen, s.last_seen"
)
# Haversine; least() keeps rounding from pushing asin's argument past 1.
_DISTANCE = sql.SQL(
    "{r} * 2 * asin(least(1, sqrt("
    "power(sin(radians(s.lat - %(near_lat)s) / 2), 2)"
    " + cos(radians(%(near_lat)s)) * cos(radians(s.lat))"
    " * power(sin(radians(s.lon - %(near_lon)s) / 2), 2))))"
).format(r=sql.Literal(EARTH_RADIUS_M))


async def list_cities(conn: Conn, cities: frozenset[str] | None) -> list[dict[str, Any]]:
    """Cities with sensors, only those in ``cities`` (None: all)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_CITIES, {"cities": sorted(cities) if cities is not None else None})
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class SensorFilter:
    city: str | None = None
    #: The cities the caller may see (None: all).
    visible: frozenset[str] | None = None
    kind: str | None = None
    metric: str | None = None
    #: With ``metric``: only sensors that reported it this recently (raw data).
    active_within: timedelta = timedelta(days=7)
    near: Near | None = None
    bbox: BBox | None = None
    after: str | None = None
    limit: int = 100


async def list_sensors(conn: Conn, f: SensorFilter) -> list[dict[str, Any]]:
    """One page (``limit`` + 1 rows: the extra one says whether a next page exists)."""
    where: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, Any] = {"limit": f.limit + 1}
    if f.city is not None:
        where.append(sql.SQL("s.city = %(city)s"))
        params["city"] = f.city
    if f.visible is not None:
        where.append(sql.SQL("s.city = ANY(%(visible)s)"))
        params["visible"] = sorted(f.visible)
    if f.kind is not None:
        where.append(sql.SQL("s.kind = %(kind)s"))
        params["kind"] = f.kind
    if f.metric is not None:
        where.append(
            sql.SQL(
                "EXISTS (SELECT 1 FROM readings r WHERE r.sensor_id = s.sensor_id"
                " AND r.metric = %(metric)s AND r.time > now() - %(active)s)"
            )
        )
        params.update(metric=f.metric, active=f.active_within)
    if f.bbox is not None:
        where.append(
            sql.SQL(
                "s.lon BETWEEN %(min_lon)s AND %(max_lon)s"
                " AND s.lat BETWEEN %(min_lat)s AND %(max_lat)s"
            )
        )
        params.update(
            min_lon=f.bbox.min_lon, max_lon=f.bbox.max_lon,
            min_lat=f.bbox.min_lat, max_lat=f.bbox.max_lat,
        )  # fmt: skip
    distance: sql.Composable = sql.SQL("NULL::double precision")
    if f.near is not None:
        distance = _DISTANCE
        # A latitude band first: cheap, and it lets an index on lat help.
        dlat = f.near.radius_m / _M_PER_DEG_LAT
        where.append(sql.SQL("s.lat BETWEEN %(lat_lo)s AND %(lat_hi)s"))
        where.append(sql.SQL("{} <= %(radius)s").format(_DISTANCE))
        params.update(
            near_lat=f.near.lat, near_lon=f.near.lon, radius=f.near.radius_m,
            lat_lo=f.near.lat - dlat, lat_hi=f.near.lat + dlat,
        )  # fmt: skip
    if f.after is not None:
        where.append(sql.SQL("s.sensor_id > %(after)s"))
        params["after"] = f.after
    query = sql.SQL(
        "SELECT {cols}, {distance} AS distance_m FROM sensors s WHERE {where}"
        " ORDER BY s.sensor_id LIMIT %(limit)s"
    ).format(cols=_SENSOR_COLUMNS, distance=distance, where=sql.SQL(" AND ").join(where))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    for row in rows:
        if row["distance_m"] is not None and not math.isfinite(row["distance_m"]):
            row["distance_m"] = None
    return rows


async def sensors_in(conn: Conn, sensor_ids: Sequence[str], cities: frozenset[str]) -> set[str]:
    """Those of ``sensor_ids`` registered in one of ``cities``."""
    cur = await conn.execute(
        "SELECT sensor_id FROM sensors WHERE sensor_id = ANY(%s) AND city = ANY(%s)",
        (list(sensor_ids), sorted(cities)),
    )
    return {str(r[0]) for r in await cur.fetchall()}


async def get_sensor(conn: Conn, sensor_id: str) -> dict[str, Any] | None:
    query = sql.SQL("SELECT {} FROM sensors s WHERE s.sensor_id = %s").format(_SENSOR_COLUMNS)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, (sensor_id,))
        return await cur.fetchone()


# A loose index scan over readings_key (sensor_id, metric, time): each step
# finds the next metric name with one probe per chunk, so discovering a
# sensor's metrics costs (metrics x chunks) probes, not a scan of its rows.
_LATEST = """
WITH RECURSIVE m(metric) AS (
    SELECT min(metric) FROM readings
    WHERE sensor_id = %(sensor)s AND time >= now() - %(lookback)s
    UNION ALL
    SELECT (SELECT min(metric) FROM readings
            WHERE sensor_id = %(sensor)s AND metric > m.metric AND time >= now() - %(lookback)s)
    FROM m WHERE m.metric IS NOT NULL
)
SELECT m.metric, r.time, r.value
FROM m
CROSS JOIN LATERAL (
    SELECT time, value FROM readings
    WHERE sensor_id = %(sensor)s AND metric = m.metric AND time >= now() - %(lookback)s
    ORDER BY time DESC LIMIT 1) r
WHERE m.metric IS NOT NULL
ORDER BY m.metric
"""


async def latest_values(conn: Conn, sensor_id: str, lookback: timedelta) -> list[dict[str, Any]]:
    """The newest reading of each metric the sensor reported within ``lookback``.

    Read from raw readings, never a rollup: a late reading is the latest one
    the moment it is stored, not after the next rollup refresh.
    """
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LATEST, {"sensor": sensor_id, "lookback": lookback})
        return await cur.fetchall()
