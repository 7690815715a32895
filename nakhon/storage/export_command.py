"""``nakhon export``: a city's history as open data, a CSV or Parquet file with its Data Package.

Writes three files into the directory of ``--out``: the readings (``--out``,
CSV or, with ``--format parquet``, Parquet: nakhon/storage/export_parquet.py),
``sensors.csv`` (the exported sensors with their place) and
``datapackage.json`` (a Frictionless Tabular Data Package describing both).
The readings stream through a server-side cursor (nakhon/storage/export.py)
into ``FILE.part``, renamed to ``FILE`` once complete, so a failed export
never leaves a file that looks whole.

Connects as the API's reader role (``NAKHON_DB_API_DSN``) when it is set,
else as the owner (``NAKHON_DB_DSN``); read-only either way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import AsyncConnection

from nakhon.config import DbSettings, load_settings
from nakhon.storage.export import (
    DEFAULT_LICENCE,
    CsvEncoder,
    ExportRequest,
    data_package,
    fetch_sensors,
    format_time,
    parse_bucket,
    sensors_csv,
    stream_rows,
)
from nakhon.storage.export_parquet import ParquetRowsWriter

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DATABASE = 3

#: Rows between two progress lines on stderr.
PROGRESS_ROWS = 100_000
SENSORS_FILE = "sensors.csv"
PACKAGE_FILE = "datapackage.json"

_CITY = re.compile(r"^[a-z0-9_-]{1,64}$")
_METRIC = re.compile(r"^[a-z0-9_]{1,64}$")

_HELP = """\
Export one city's readings of one or more metrics over [--since, --until) as
open data: --out (CSV, UTF-8, header row, ISO 8601 UTC times, a unit column;
or with --format parquet the same columns typed: time as timestamp[us, UTC],
values float64, text as string),
and beside it sensors.csv (the exported sensors with kind, name, lat, lon) and
datapackage.json (a Frictionless Tabular Data Package: title, description,
licence, the columns with their types and units, the time range, the sources).

Without --bucket: one row per reading (time, city, sensor_id, metric, value,
unit). With --bucket 1h (s|m|h|d|w): per sensor, metric and bucket, avg, min,
max and count, from the rollups readings_1h/readings_1m when the bucket and
the range fit their grid, else from raw readings.

Times without a zone are UTC; a bare date is its midnight UTC.
Connects as NAKHON_DB_API_DSN (the API's read-only role) if set, else NAKHON_DB_DSN.
Exit codes: 0 written; 2 bad arguments; 3 the database failed.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="export a city's readings as open data (CSV + datapackage.json)",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--city", required=True, help="city id, e.g. chiang_mai")
    p.add_argument(
        "--metric", required=True, action="append", help="metric, e.g. pm2_5 (repeatable)"
    )
    p.add_argument("--since", required=True, type=_time, help="start (inclusive), ISO 8601")
    p.add_argument("--until", required=True, type=_time, help="end (exclusive), ISO 8601")
    p.add_argument("--bucket", type=_bucket, default=None, help="aggregate per bucket, e.g. 1h")
    p.add_argument(
        "--format",
        choices=["csv", "parquet"],
        default="csv",
        help="csv (default) or parquet (the same columns, typed)",
    )
    p.add_argument("--out", required=True, type=Path, help="the readings file to write")
    p.add_argument(
        "--licence",
        default=DEFAULT_LICENCE,
        help=f"licence id for datapackage.json (default {DEFAULT_LICENCE})",
    )
    p.set_defaults(func=run_export)


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _bucket(text: str) -> object:
    try:
        return parse_bucket(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_export(args: argparse.Namespace) -> int:
    city = str(args.city).lower()
    metrics = tuple(dict.fromkeys(m.lower() for m in args.metric))
    problem = None
    if not _CITY.match(city):
        problem = f"--city {city!r}: expected 1-64 of a-z 0-9 _ -"
    elif bad := [m for m in metrics if not _METRIC.match(m)]:
        problem = f"--metric {bad[0]!r}: expected 1-64 of a-z 0-9 _"
    elif args.since >= args.until:
        problem = "--since must be before --until"
    elif args.out.name in (SENSORS_FILE, PACKAGE_FILE):
        problem = f"--out may not be named {args.out.name} (written beside it)"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    req = ExportRequest(city, metrics, args.since, args.until, args.bucket)
    settings = load_settings()
    try:
        rows, sensors = asyncio.run(
            export_files(_dsn(settings.db), req, args.out, args.licence, args.format)
        )
    except psycopg.OperationalError as exc:
        print(f"error: cannot reach the database: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    except psycopg.Error as exc:
        print(f"error: the export query failed: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    print(
        f"wrote {rows} rows of {len(sensors)} sensors ({', '.join(metrics)} in {city},"
        f" {format_time(req.start)} to {format_time(req.end)}, from {req.source}) to {args.out},"
        f" with {args.out.parent / SENSORS_FILE} and {args.out.parent / PACKAGE_FILE}"
    )
    return EXIT_OK


def _dsn(db: DbSettings) -> str:
    """The API's read-only role where configured; the owner otherwise."""
    return (db.api_dsn or db.dsn).get_secret_value()


async def export_files(
    dsn: str, req: ExportRequest, out: Path, licence: str, file_format: str = "csv"
) -> tuple[int, set[str]]:
    """Write the readings, sensors.csv and datapackage.json; the rows and sensors written."""
    part = out.with_name(out.name + ".part")
    rows = 0
    sensors: set[str] = set()
    started = time.monotonic()
    async with await AsyncConnection.connect(
        dsn,
        autocommit=True,
        application_name="nakhon-export",
        options="-c TimeZone=UTC -c default_transaction_read_only=on",
    ) as conn:
        try:
            with _rows_writer(part, req, file_format) as write:
                next_report = PROGRESS_ROWS
                async for batch in stream_rows(conn, req):
                    write(batch)
                    sensors.update(str(row[2]) for row in batch)
                    rows += len(batch)
                    if rows >= next_report:
                        print(
                            f"export: {rows} rows written ({time.monotonic() - started:.0f} s)",
                            file=sys.stderr,
                        )
                        next_report = rows + PROGRESS_ROWS
            sensor_rows = await fetch_sensors(conn, sensors)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    part.replace(out)
    (out.parent / SENSORS_FILE).write_text(sensors_csv(sensor_rows), encoding="utf-8")
    package = data_package(
        req,
        path=out.name,
        sensors_path=SENSORS_FILE,
        licence=licence,
        file_format=file_format,
        rows=rows,
    )
    (out.parent / PACKAGE_FILE).write_text(
        json.dumps(package, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return rows, sensors


@contextmanager
def _rows_writer(
    part: Path, req: ExportRequest, file_format: str
) -> Iterator[Callable[[list[tuple[Any, ...]]], None]]:
    """A function writing one batch of query rows to ``part`` in the format; closed on exit."""
    if file_format == "parquet":
        with ParquetRowsWriter(part, req.fields) as parquet:
            yield parquet.write
        return
    with part.open("w", encoding="utf-8", newline="") as f:
        encoder = CsvEncoder(req.fields)
        f.write(encoder.header())

        def write_csv(batch: list[tuple[Any, ...]]) -> None:
            f.write(encoder.rows(batch))

        yield write_csv
