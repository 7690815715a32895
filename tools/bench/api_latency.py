"""API latency for ``make bench``: a 24-hour series in 5-minute buckets.

Seeds 24 hours of one reading a minute for ``sensors`` sensors of a bench
city (binary COPY into a staging table, then one idempotent insert), brings
the rollups up to date the way ``nakhon maintain`` would on the Apache
edition, then times sequential requests over one keep-alive connection:
one sensor's series, and the whole city's. Start and end are whole minutes,
so the API serves both from ``readings_1m``, as it would for a real app.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from nakhon.storage.migrate import detect_edition
from nakhon.storage.rollups import ApacheRollupRefresher

BENCH_CITY = "bench_city"
METRIC = "pm2_5"


def _sensor_id(i: int) -> str:
    return f"bench-{i:04d}"


async def seed_bench_city(dsn: str, sensors: int, end: datetime) -> int:
    """24 h of per-minute PM2.5 for the bench city; returns rows written (0 when present)."""
    start = end - timedelta(hours=24)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        async with conn.transaction():
            await conn.execute(
                "CREATE TEMP TABLE bench_stage (time timestamptz, sensor_id text, metric text,"
                " value double precision, city text) ON COMMIT DROP"
            )
            async with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY bench_stage (time, sensor_id, metric, value, city)"
                    " FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["timestamptz", "text", "text", "float8", "text"])
                for minute in range(24 * 60):
                    t = start + timedelta(minutes=minute)
                    for i in range(sensors):
                        value = 30 + 20 * math.sin(minute / 180 + i) + (i % 7)
                        await copy.write_row((t, _sensor_id(i), METRIC, value, BENCH_CITY))
            cur2 = await conn.execute(
                "INSERT INTO readings (time, sensor_id, metric, value, city)"
                " SELECT * FROM bench_stage ON CONFLICT ON CONSTRAINT readings_key DO NOTHING"
            )
            written = max(cur2.rowcount, 0)
            await conn.execute(
                "INSERT INTO sensors (sensor_id, city, kind, name, source)"
                " SELECT DISTINCT sensor_id, city, 'air_quality', sensor_id, 'registry'"
                " FROM bench_stage ON CONFLICT (sensor_id) DO NOTHING"
            )
        if await detect_edition(conn) == "apache":
            await ApacheRollupRefresher(conn).refresh()
    return written


def _percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98]


async def measure_api_latency(
    base_url: str,
    *,
    dsn: str,
    sensors: int = 50,
    requests: int = 200,
    api_key: str | None = None,
    seed: bool = True,
) -> dict[str, float]:
    """Latency percentiles in milliseconds of the two 24-hour series requests.

    Keys: ``series_sensor_p50_ms``, ``series_sensor_p99_ms``,
    ``series_city_p50_ms``, ``series_city_p99_ms``, plus ``sensors`` and
    ``requests`` for the record. ``dsn`` seeds the bench city, so it is a
    role that may write and delete (the owner's, ``NAKHON_DB_DSN``).
    """
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    if seed:
        await seed_bench_city(dsn, sensors, end)
    window = {
        "metric": METRIC,
        "start": (end - timedelta(hours=24)).isoformat(),
        "end": end.isoformat(),
        "bucket": "5m",
    }
    headers = {"X-API-Key": api_key} if api_key else {}
    result: dict[str, float] = {"sensors": float(sensors), "requests": float(requests)}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30.0) as client:
        for name, extra in (
            ("sensor", {"sensor_id": _sensor_id(0)}),
            ("city", {"city": BENCH_CITY}),
        ):
            params = {**window, **extra}
            (await client.get("/v1/series", params=params)).raise_for_status()  # warm up
            samples: list[float] = []
            while len(samples) < requests:
                started = time.perf_counter()
                response = await client.get("/v1/series", params=params)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code == 429:  # the key's rate limit: wait, not measured
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                response.raise_for_status()
                samples.append(elapsed)
            p50, p99 = _percentiles(samples)
            result[f"series_{name}_p50_ms"] = round(p50, 2)
            result[f"series_{name}_p99_ms"] = round(p99, 2)
    return result
