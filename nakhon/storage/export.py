"""A city's readings as open data: the query, the CSV rows and the Data Package.

Shared by ``nakhon export`` (:mod:`nakhon.storage.export_command`) and
``GET /v1/export`` (:mod:`nakhon.api.routes.export`), so both give the same
bytes for the same request.

Rows come through a server-side cursor (``DECLARE ... CURSOR`` inside a
read-only transaction), :data:`FETCH_ROWS` at a time: an export of a year
of a city holds one batch in memory, never the result.

Two shapes:

- raw (no bucket): one row per reading of ``readings``,
  ``time, city, sensor_id, metric, value, unit``, ordered by time, sensor, metric;
- bucketed: per sensor, metric and bucket, ``bucket_start, city, sensor_id,
  metric, avg, min, max, count, unit``. Served from the rollup ``readings_1h``
  or ``readings_1m`` when the bucket is a whole number of its width and
  ``start`` and ``end`` lie on its grid (the rule of ``/v1/series``,
  nakhon/api/queries/series.py: then each bucket is a union of whole rollup
  buckets and equals SQL over raw readings, avg as sum(sum) / sum(count)),
  else ``time_bucket`` over raw readings. Buckets follow TimescaleDB's
  ``time_bucket`` grid (origin 2000-01-03 UTC).

Times are ISO 8601 in UTC (``2026-11-28T10:00:00Z``, fractional seconds
only when the reading has them); values are Python's shortest round-trip
form of the stored double, so the CSV reads back to exactly the stored value.
Units are the catalogue's canonical units (nakhon/domain/catalogue.py),
empty for metrics outside it (``x_...``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql

from nakhon.domain.catalogue import METRICS

#: Rows fetched from the server-side cursor per round trip.
FETCH_ROWS = 5_000
#: TimescaleDB's default ``time_bucket`` origin for sub-month intervals.
ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)
DEFAULT_LICENCE = "CC-BY-4.0"

#: Licences an open-data portal knows by name, with their text.
LICENCES: dict[str, tuple[str, str]] = {
    "CC-BY-4.0": (
        "Creative Commons Attribution 4.0",
        "https://creativecommons.org/licenses/by/4.0/",
    ),
    "CC-BY-SA-4.0": (
        "Creative Commons Attribution Share-Alike 4.0",
        "https://creativecommons.org/licenses/by-sa/4.0/",
    ),
    "CC0-1.0": (
        "Creative Commons CCZero 1.0",
        "https://creativecommons.org/publicdomain/zero/1.0/",
    ),
    "ODC-BY-1.0": (
        "Open Data Commons Attribution License 1.0",
        "https://opendatacommons.org/licenses/by/1-0/",
    ),
    "ODbL-1.0": (
        "Open Data Commons Open Database License 1.0",
        "https://opendatacommons.org/licenses/odbl/1-0/",
    ),
}

Conn = AsyncConnection[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Field:
    """One column: its Table Schema name, type and description."""

    name: str
    type: str
    description: str


RAW_FIELDS = (
    Field("time", "datetime", "time of the reading, ISO 8601 UTC"),
    Field("city", "string", "city id (Nakhon's cities table)"),
    Field("sensor_id", "string", "sensor id; see the sensors resource for its place"),
    Field("metric", "string", "canonical metric name"),
    Field("value", "number", "the reading, in the unit of the unit column"),
    Field("unit", "string", "the metric's canonical unit (empty if not catalogued)"),
)
BUCKET_FIELDS = (
    Field("bucket_start", "datetime", "start of the bucket [bucket_start, +bucket), ISO 8601 UTC"),
    Field("city", "string", "city id (Nakhon's cities table)"),
    Field("sensor_id", "string", "sensor id; see the sensors resource for its place"),
    Field("metric", "string", "canonical metric name"),
    Field("avg", "number", "mean of the bucket's readings, in the unit of the unit column"),
    Field("min", "number", "smallest reading of the bucket"),
    Field("max", "number", "largest reading of the bucket"),
    Field("count", "integer", "readings in the bucket"),
    Field("unit", "string", "the metric's canonical unit (empty if not catalogued)"),
)
SENSOR_FIELDS = (
    Field("sensor_id", "string", "sensor id"),
    Field("city", "string", "city id"),
    Field("kind", "string", "kind of sensor, e.g. air_quality"),
    Field("name", "string", "the sensor's name"),
    Field("lat", "number", "latitude, WGS 84 degrees"),
    Field("lon", "number", "longitude, WGS 84 degrees"),
)


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to export: one city's metrics over [start, end), raw or bucketed."""

    city: str
    metrics: tuple[str, ...]
    start: datetime
    end: datetime
    bucket: timedelta | None = None

    @property
    def fields(self) -> tuple[Field, ...]:
        return RAW_FIELDS if self.bucket is None else BUCKET_FIELDS

    @property
    def source(self) -> str:
        """The table or rollup the rows come from."""
        if self.bucket is None:
            return "readings"
        for name, width in (("readings_1h", timedelta(hours=1)), ("readings_1m", _MINUTE)):
            if self.bucket % width == timedelta(0) and all(
                (t - ORIGIN) % width == timedelta(0) for t in (self.start, self.end)
            ):
                return name
        return "readings"


_MINUTE = timedelta(minutes=1)

_RAW = sql.SQL(
    "SELECT time, city, sensor_id, metric, value FROM readings"
    " WHERE city = %(city)s AND metric = ANY(%(metrics)s)"
    " AND time >= %(start)s AND time < %(end)s"
    " ORDER BY time, sensor_id, metric"
)
_BUCKETED_RAW = sql.SQL(
    "SELECT time_bucket(%(bucket)s, time) AS b, city, sensor_id, metric,"
    " avg(value), min(value), max(value), count(*) FROM readings"
    " WHERE city = %(city)s AND metric = ANY(%(metrics)s)"
    " AND time >= %(start)s AND time < %(end)s"
    " GROUP BY 1, 2, 3, 4 ORDER BY 1, 3, 4"
)
_BUCKETED_ROLLUP = (
    "SELECT time_bucket(%(bucket)s, bucket) AS b, city, sensor_id, metric,"
    " sum(sum) / sum(count), min(min), max(max), sum(count)::bigint FROM {table}"
    " WHERE city = %(city)s AND metric = ANY(%(metrics)s)"
    " AND bucket >= %(start)s AND bucket < %(end)s"
    " GROUP BY 1, 2, 3, 4 ORDER BY 1, 3, 4"
)


def build_query(req: ExportRequest) -> tuple[sql.SQL | sql.Composed, dict[str, object]]:
    params: dict[str, object] = {
        "city": req.city,
        "metrics": list(req.metrics),
        "start": req.start,
        "end": req.end,
        "bucket": req.bucket,
    }
    if req.bucket is None:
        return _RAW, params
    if req.source == "readings":
        return _BUCKETED_RAW, params
    return sql.SQL(_BUCKETED_ROLLUP).format(table=sql.Identifier(req.source)), params


async def stream_rows(
    conn: Conn, req: ExportRequest, fetch_rows: int = FETCH_ROWS
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """The request's rows in batches, through a server-side cursor in one transaction."""
    query, params = build_query(req)
    async with conn.transaction(), conn.cursor(name="nakhon_export") as cur:
        await cur.execute(query, params)
        while batch := await cur.fetchmany(fetch_rows):
            yield batch


_SENSORS = (
    "SELECT sensor_id, city, kind, name, lat, lon FROM sensors"
    " WHERE sensor_id = ANY(%(ids)s) ORDER BY sensor_id"
)


async def fetch_sensors(conn: Conn, sensor_ids: Iterable[str]) -> list[tuple[Any, ...]]:
    """The ``sensors`` rows of the exported sensors (their place, for the second resource)."""
    async with conn.cursor() as cur:
        await cur.execute(_SENSORS, {"ids": sorted(sensor_ids)})
        return await cur.fetchall()


_CITY_SENSORS = (
    "SELECT s.sensor_id, s.city, s.kind, s.name, s.lat, s.lon FROM sensors s"
    " WHERE s.city = %(city)s AND s.sensor_id IN ("
    "  SELECT DISTINCT sensor_id FROM {source}"
    "  WHERE city = %(city)s AND metric = ANY(%(metrics)s)"
    "  AND {time} >= %(start)s AND {time} < %(end)s)"
    " ORDER BY s.sensor_id"
)


async def fetch_city_sensors(conn: Conn, req: ExportRequest) -> list[tuple[Any, ...]]:
    """The sensors of the export (with readings of its metrics in its range, read from the
    table or rollup its rows come from) that the registry places in its city.

    ``GET /v1/export/sensors.csv`` serves these without streaming the rows first;
    the city filter keeps a sensor moved to another city out of this city's file.
    """
    time_column = "time" if req.source == "readings" else "bucket"
    query = sql.SQL(_CITY_SENSORS).format(
        source=sql.Identifier(req.source), time=sql.Identifier(time_column)
    )
    params = {"city": req.city, "metrics": list(req.metrics), "start": req.start, "end": req.end}
    async with conn.cursor() as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


_INTERVAL = re.compile(r"^([1-9][0-9]{0,5})(s|m|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_bucket(text: str) -> timedelta:
    """``30s``, ``5m``, ``1h``, ``1d``, ``2w`` -> a timedelta (ValueError otherwise)."""
    m = _INTERVAL.match(text)
    if not m:
        raise ValueError(f"bucket {text!r}: expected a number and a unit s|m|h|d|w, e.g. 1h")
    return timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2)])


def format_time(value: datetime) -> str:
    """ISO 8601 in UTC with ``Z``; fractional seconds only when there are some."""
    text = value.astimezone(UTC).isoformat(timespec="auto")
    return text.removesuffix("+00:00") + "Z"


def _cell(value: object) -> object:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back to the same double
    return "" if value is None else value


def unit_of(metric: str) -> str:
    found = METRICS.get(metric)
    return found.unit if found is not None else ""


class CsvEncoder:
    """Rows of the query to CSV text (RFC 4180: comma, CRLF, quotes where needed)."""

    def __init__(self, fields: Sequence[Field], *, unit_column: bool = True) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer)
        self._fields = fields
        self._unit_column = unit_column

    def _take(self) -> str:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text

    def header(self) -> str:
        self._writer.writerow([f.name for f in self._fields])
        return self._take()

    def rows(self, rows: Iterable[Sequence[Any]]) -> str:
        """``rows`` as CSV; a query row lacks the unit, added here from the metric (column 4)."""
        for row in rows:
            cells = [_cell(v) for v in row]
            if self._unit_column:
                cells.append(unit_of(str(row[3])))
            self._writer.writerow(cells)
        return self._take()


def sensors_csv(rows: Iterable[Sequence[Any]]) -> str:
    encoder = CsvEncoder(SENSOR_FIELDS, unit_column=False)
    return encoder.header() + encoder.rows(rows)


def package_name(req: ExportRequest) -> str:
    """A Data Package name: lower-case, ``[a-z0-9._-]``."""
    name = "-".join(
        ("nakhon", req.city, "_".join(req.metrics), f"{req.start:%Y%m%d}", f"{req.end:%Y%m%d}")
    )
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower())


def _schema(
    fields: Sequence[Field], primary_key: list[str], units: dict[str, object]
) -> dict[str, object]:
    """A Table Schema; ``units`` adds a ``units`` property to the fields it names."""
    described: list[dict[str, object]] = []
    for f in fields:
        field: dict[str, object] = {"name": f.name, "type": f.type, "description": f.description}
        if f.type == "datetime":
            field["format"] = "any"  # ISO 8601, with fractional seconds when present
        if f.name in units:
            field["units"] = units[f.name]
        described.append(field)
    return {"fields": described, "primaryKey": primary_key}


#: The media type of each file format (Parquet's registered by IANA in 2024).
MEDIA_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


def _resource(
    name: str, path: str, schema: dict[str, object], file_format: str = "csv"
) -> dict[str, object]:
    resource: dict[str, object] = {
        "name": name,
        "path": path,
        "profile": "tabular-data-resource",
        "format": file_format,
        "mediatype": MEDIA_TYPES[file_format],
    }
    if file_format == "csv":
        resource["encoding"] = "utf-8"  # a text encoding; Parquet is binary
    return resource | {"schema": schema}


def data_package(
    req: ExportRequest,
    *,
    path: str,
    sensors_path: str,
    licence: str = DEFAULT_LICENCE,
    file_format: str = "csv",
    rows: int | None = None,
    created: datetime | None = None,
) -> dict[str, object]:
    """The Frictionless (Tabular) Data Package describing an export and its sensors.

    ``file_format`` is the readings file's (``csv`` or ``parquet``); sensors are CSV.
    """
    # The unit of each metric, on every value column (also in the unit column).
    metric_units = {m: unit_of(m) for m in req.metrics}
    readings = _resource(
        "readings",
        path,
        _schema(
            req.fields,
            [req.fields[0].name, "sensor_id", "metric"],
            dict.fromkeys(("value", "avg", "min", "max"), metric_units),
        ),
        file_format,
    )
    if rows is not None:
        readings["rows"] = rows
    sensors = _resource(
        "sensors",
        sensors_path,
        _schema(SENSOR_FIELDS, ["sensor_id"], dict.fromkeys(("lat", "lon"), "degrees (WGS 84)")),
    )
    bucket = f", per sensor and {format_bucket(req.bucket)} bucket" if req.bucket else ""
    title, url = LICENCES.get(licence, (licence, ""))
    licence_entry = {"name": licence, "title": title} | ({"path": url} if url else {})
    return {
        "profile": "tabular-data-package",
        "name": package_name(req),
        "title": f"{', '.join(req.metrics)} in {req.city}{bucket}",
        "description": (
            f"Readings of {', '.join(req.metrics)} by the sensors of the city {req.city!r}"
            f" from {format_time(req.start)} (inclusive) to {format_time(req.end)} (exclusive)"
            f"{bucket}, exported from Nakhon's TimescaleDB table {req.source!r}."
            " Times are UTC; values are in the metric's canonical unit (column unit)."
        ),
        "licenses": [licence_entry],
        "created": format_time(created or datetime.now(UTC)),
        "temporal": {"start": format_time(req.start), "end": format_time(req.end)},
        "keywords": ["nakhon", req.city, *req.metrics],
        "sources": [{"title": f"Nakhon city sensor platform, {req.city}, table {req.source}"}],
        "resources": [readings, sensors],
    }


def format_bucket(width: timedelta | None) -> str:
    """A bucket width as ``2w``, ``1d``, ``1h``, ``5m`` or ``30s`` (:func:`parse_bucket`)."""
    seconds = int(width.total_seconds()) if width else 0
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
