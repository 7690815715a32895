"""Current AQI per station: averages over each pollutant's own period, then the index.

Averages come from ``readings_1m`` (real time on both editions): 24 h for
PM2.5 and PM10, 8 h for O3 and CO, 1 h for NO2, SO2 and O3 (US 1-hour O3),
each ending at ``at``. The index itself is :mod:`nakhon.domain.aqi`.
A station is every sensor of the city that reported one of these
pollutants within the last 24 hours. No data-completeness rule is applied
(PCD and EPA ask for e.g. 75 % of hours); the averages are over what exists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from nakhon.api.database import Conn
from nakhon.domain.aqi import Concentrations

_AVERAGES = """
WITH m AS (
    SELECT sensor_id, metric, bucket, sum, count FROM readings_1m
    WHERE city = %(city)s AND metric IN ('pm2_5', 'pm10', 'o3', 'co', 'no2', 'so2')
      AND bucket >= %(at)s - INTERVAL '24 hours' AND bucket < %(at)s
)
SELECT m.sensor_id, s.name, s.lat, s.lon,
  sum(sum) FILTER (WHERE metric = 'pm2_5') / nullif(sum(count) FILTER (WHERE metric = 'pm2_5'), 0)
      AS pm2_5_24h,
  sum(sum) FILTER (WHERE metric = 'pm10') / nullif(sum(count) FILTER (WHERE metric = 'pm10'), 0)
      AS pm10_24h,
  sum(sum) FILTER (WHERE metric = 'o3' AND bucket >= %(at)s - INTERVAL '8 hours')
      / nullif(sum(count) FILTER (WHERE metric = 'o3' AND bucket >= %(at)s - INTERVAL '8 hours'), 0)
      AS o3_8h,
  sum(sum) FILTER (WHERE metric = 'o3' AND bucket >= %(at)s - INTERVAL '1 hour')
      / nullif(sum(count) FILTER (WHERE metric = 'o3' AND bucket >= %(at)s - INTERVAL '1 hour'), 0)
      AS o3_1h,
  sum(sum) FILTER (WHERE metric = 'co' AND bucket >= %(at)s - INTERVAL '8 hours')
      / nullif(sum(count) FILTER (WHERE metric = 'co' AND bucket >= %(at)s - INTERVAL '8 hours'), 0)
      AS co_8h,
  sum(sum) FILTER (WHERE metric = 'no2' AND bucket >= %(at)s - INTERVAL '1 hour')
      / nullif(sum(count) FILTER (WHERE metric = 'no2' AND bucket >= %(at)s - INTERVAL '1 hour'), 0)
      AS no2_1h,
  sum(sum) FILTER (WHERE metric = 'so2' AND bucket >= %(at)s - INTERVAL '1 hour')
      / nullif(sum(count) FILTER (WHERE metric = 'so2' AND bucket >= %(at)s - INTERVAL '1 hour'), 0)
      AS so2_1h
FROM m LEFT JOIN sensors s USING (sensor_id)
GROUP BY m.sensor_id, s.name, s.lat, s.lon
ORDER BY m.sensor_id
"""

CONCENTRATION_FIELDS = ("pm2_5_24h", "pm10_24h", "o3_8h", "o3_1h", "co_8h", "no2_1h", "so2_1h")


async def station_averages(conn: Conn, city: str, at: datetime) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_AVERAGES, {"city": city, "at": at})
        return await cur.fetchall()


def concentrations(row: dict[str, Any]) -> Concentrations:
    return Concentrations(**{name: row[name] for name in CONCENTRATION_FIELDS})
