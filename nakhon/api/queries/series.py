"""Bucketed time series, from raw readings or from a rollup.

Source choice: the coarsest rollup whose bucket divides the requested bucket
and on whose grid ``start`` and ``end`` both lie (then every requested bucket
is a union of whole rollup buckets, and the answer equals SQL over raw
readings); raw readings otherwise. ``readings_1h`` serves a year of daily
points from ~8,760 rows per sensor instead of ~1 M raw ones.

Combining rollup rows: avg = sum(sum) / sum(count) (exact, not an average of
averages), min of mins, max of maxes, sum of sums, sum of counts, and last =
the ``last`` of the latest rollup bucket. For a whole city, ``last`` from a
rollup is the last value of the latest bucket of *some* sensor in it (ties
between sensors within one rollup bucket are broken arbitrarily).

Buckets follow TimescaleDB's ``time_bucket`` grid (origin 2000-01-03 UTC,
:data:`ORIGIN`), so gap filling below computes the same bucket starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, cast

from psycopg import sql

from nakhon.api.database import Conn

#: TimescaleDB's default ``time_bucket`` origin for sub-month intervals.
ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)


Agg = Literal["avg", "min", "max", "sum", "count", "last"]
#: none: only buckets with data; null: every bucket, null where empty;
#: previous: every bucket, carrying the last value forward (LOCF).
Fill = Literal["none", "null", "previous"]


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    width: timedelta | None  # None: raw readings
    time_column: str


RAW = Source("readings", None, "time")
MINUTE = Source("readings_1m", timedelta(minutes=1), "bucket")
HOUR = Source("readings_1h", timedelta(hours=1), "bucket")

_RAW_AGG: dict[Agg, sql.SQL] = {
    "avg": sql.SQL("avg(value)"),
    "min": sql.SQL("min(value)"),
    "max": sql.SQL("max(value)"),
    "sum": sql.SQL("sum(value)"),
    "count": sql.SQL("count(*)::double precision"),
    "last": sql.SQL("last(value, time)"),
}
_ROLLUP_AGG: dict[Agg, sql.SQL] = {
    "avg": sql.SQL("sum(sum) / sum(count)"),
    "min": sql.SQL("min(min)"),
    "max": sql.SQL("max(max)"),
    "sum": sql.SQL("sum(sum)"),
    "count": sql.SQL("sum(count)::double precision"),
    "last": sql.SQL("last(last, bucket)"),
}


@dataclass(frozen=True, slots=True)
class SeriesRequest:
    metric: str
    start: datetime
    end: datetime
    bucket: timedelta
    agg: Agg
    sensor_ids: tuple[str, ...]
    city: str | None
    fill: Fill
    #: The cities the caller may see (None: all); readings outside them are never read.
    visible: frozenset[str] | None = None

    @property
    def per_sensor(self) -> bool:
        return bool(self.sensor_ids)

    @property
    def series_count(self) -> int:
        return len(self.sensor_ids) or 1


def _on_grid(ts: datetime, width: timedelta) -> bool:
    return (ts - ORIGIN) % width == timedelta(0)


def choose_source(bucket: timedelta, start: datetime, end: datetime) -> Source:
    for source in (HOUR, MINUTE):
        assert source.width is not None
        if (
            bucket % source.width == timedelta(0)
            and _on_grid(start, source.width)
            and _on_grid(end, source.width)
        ):
            return source
    return RAW


def bucket_floor(ts: datetime, width: timedelta) -> datetime:
    return ORIGIN + ((ts - ORIGIN) // width) * width


def bucket_count(start: datetime, end: datetime, width: timedelta) -> int:
    """Buckets touched by [start, end): what a gap-filled series would hold."""
    first = bucket_floor(start, width)
    last = bucket_floor(end - timedelta(microseconds=1), width)
    return (last - first) // width + 1


def bucket_starts(start: datetime, end: datetime, width: timedelta) -> list[datetime]:
    first = bucket_floor(start, width)
    return [first + i * width for i in range(bucket_count(start, end, width))]


def build_query(req: SeriesRequest, source: Source) -> sql.Composed:
    time_col = sql.Identifier(source.time_column)
    key = sql.Identifier("sensor_id" if req.per_sensor else "city")
    filters = [
        sql.SQL("metric = %(metric)s"),
        sql.SQL("{} >= %(start)s").format(time_col),
        sql.SQL("{} < %(end)s").format(time_col),
    ]
    if req.per_sensor:
        filters.append(sql.SQL("sensor_id = ANY(%(sensors)s)"))
    if req.city is not None:
        filters.append(sql.SQL("city = %(city)s"))
    if req.visible is not None:
        filters.append(sql.SQL("city = ANY(%(visible)s)"))
    agg = (_RAW_AGG if source is RAW else _ROLLUP_AGG)[req.agg]
    return sql.SQL(
        "SELECT {key}, time_bucket(%(bucket)s, {time}) AS b, {agg} FROM {table}"
        " WHERE {filters} GROUP BY 1, 2 ORDER BY 1, 2"
    ).format(
        key=key,
        time=time_col,
        agg=agg,
        table=sql.Identifier(source.name),
        filters=sql.SQL(" AND ").join(filters),
    )


async def fetch_series(
    conn: Conn, req: SeriesRequest
) -> tuple[Source, dict[str, dict[datetime, float | None]]]:
    """Values by series key (sensor id or city) and bucket start."""
    source = choose_source(req.bucket, req.start, req.end)
    params = {
        "metric": req.metric,
        "start": req.start,
        "end": req.end,
        "sensors": list(req.sensor_ids),
        "city": req.city,
        "visible": sorted(req.visible) if req.visible is not None else None,
        "bucket": req.bucket,
    }
    found: dict[str, dict[datetime, float | None]] = {}
    if req.per_sensor:
        for sensor_id in req.sensor_ids:
            found[sensor_id] = {}
    elif req.city is not None:
        found[req.city] = {}
    async with conn.cursor() as cur:
        await cur.execute(build_query(req, source), params)
        async for key, bucket, value in cur:
            found.setdefault(str(key), {})[cast(datetime, bucket)] = cast(float | None, value)
    return source, found


def fill_points(
    values: dict[datetime, float | None], req: SeriesRequest
) -> list[tuple[datetime, float | None]]:
    """The points of one series, gap-filled as ``req.fill`` asks."""
    if req.fill == "none":
        return sorted(values.items())
    points: list[tuple[datetime, float | None]] = []
    previous: float | None = None
    for start in bucket_starts(req.start, req.end, req.bucket):
        value = values.get(start)
        if value is None and req.fill == "previous":
            value = previous
        points.append((start, value))
        previous = value
    return points
