"""``nakhon sensors import|list``: the sensor registry from an operator's file, and a look at it."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TextIO

import psycopg

from nakhon.cli import configure_logging
from nakhon.config import load_settings
from nakhon.storage.sensor_registry import (
    PROGRESS_EVERY,
    ImportResult,
    ParseResult,
    RegistryFileError,
    RegistryFormat,
    import_sensors,
    load_registry,
)

log = logging.getLogger("nakhon.sensors")

#: Exit codes of ``nakhon sensors import``.
EXIT_OK = 0
EXIT_ROWS_REJECTED = 1
EXIT_UNREADABLE = 2
EXIT_DATABASE = 3

_IMPORT_HELP = """\
Import a sensor registry (CSV or GeoJSON) into the sensors table, source 'registry'.

CSV: a header row, then one sensor per line. Columns (header names are
case-insensitive, order is free):
  id (or sensor_id)     required; 1-64 of a-z 0-9 _ - (lower-cased)
  city                  required; same rule (Khon_Kaen -> khon_kaen), and
                        registered (nakhon cities list; nakhon cities add)
  kind                  optional, e.g. air_quality, noise, traffic
  name                  optional, free text
  lat, lon              optional, WGS 84 degrees; both or neither
                        (also: latitude, lng/longitude)
  metadata              optional JSON object, e.g. {"vendor": "Acme"}
  any other column      kept in metadata under its header (empty cells skipped)
Example:
  id,city,kind,name,lat,lon,installed
  cm-aq-001,chiang_mai,air_quality,Tha Phae Gate,18.7877,98.9937,2024-01-15

GeoJSON: a FeatureCollection of Point features, coordinates [lon, lat];
properties id (or sensor_id; else the feature's id), city, kind, name, and
any other property into metadata.

Re-importing the same file changes nothing (each row is reported unchanged).
The file's values replace city, kind, name, lat, lon and metadata of an
existing sensor; first_seen and last_seen are never touched.

A row whose city is not registered is rejected like an invalid one.

Exit codes: 0 every row imported; 1 some rows rejected (the good rows are
still imported, each rejection is printed with its line and field); 2 the
file cannot be read as a registry; 3 the database cannot be reached.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sensors",
        help="the sensor registry: import a CSV/GeoJSON file, list sensors",
        description="The sensor registry (table sensors) in the database NAKHON_DB_DSN.",
    )
    commands = p.add_subparsers(title="commands", metavar="COMMAND", required=True)

    imp = commands.add_parser(
        "import",
        help="import a registry file (CSV or GeoJSON), idempotently",
        description=_IMPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("file", metavar="FILE", type=Path, help="the registry file")
    imp.add_argument(
        "--format",
        choices=["csv", "geojson"],
        default=None,
        help="file format (default: by extension: .csv, .geojson or .json)",
    )
    imp.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and report what would change, then roll back (needs the database)",
    )
    imp.set_defaults(func=run_import)

    ls = commands.add_parser(
        "list",
        help="print registered sensors as a table",
        description="Print sensors (registered and seen in data), ordered by city and id.",
    )
    ls.add_argument("--city", help="only this city")
    ls.add_argument("--limit", type=int, default=100, help="at most this many rows (default 100)")
    ls.set_defaults(func=run_list)


def run_import(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    path: Path = args.file
    fmt: RegistryFormat | None = args.format
    try:
        parsed = load_registry(path, fmt)
    except RegistryFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    report_rejections(parsed, sys.stderr)
    if parsed.records:
        if len(parsed.records) > PROGRESS_EVERY:
            log.info("read %d rows of %s, importing %d", parsed.rows, path, len(parsed.records))
        try:
            with psycopg.connect(
                settings.db.dsn.get_secret_value(), application_name="nakhon-sensors"
            ) as conn:
                result = import_sensors(
                    conn, parsed.records, dry_run=args.dry_run, progress=_log_progress
                )
        except psycopg.OperationalError as exc:
            print(f"error: cannot reach the database: {exc}", file=sys.stderr)
            return EXIT_DATABASE
        except psycopg.errors.UndefinedTable as exc:
            print(f"error: {exc.diag.message_primary}: run nakhon migrate", file=sys.stderr)
            return EXIT_DATABASE
        for error in parsed.refuse(result.refused):
            print(f"rejected: {error}", file=sys.stderr)
    else:
        result = ImportResult(0, 0, 0)
    print(summary(path, parsed, result, dry_run=args.dry_run))
    return EXIT_ROWS_REJECTED if parsed.rejected else EXIT_OK


def _log_progress(done: int, total: int) -> None:
    if total > PROGRESS_EVERY:
        log.info("staged %d/%d sensors (%d%%)", done, total, done * 100 // total)
        if done == total:
            log.info("merging %d sensors into the registry", total)


def report_rejections(parsed: ParseResult, out: TextIO) -> None:
    for error in parsed.errors:
        print(f"rejected: {error}", file=out)


def summary(path: Path, parsed: ParseResult, result: ImportResult, *, dry_run: bool) -> str:
    verb = "would import" if dry_run else "imported"
    text = (
        f"{path.name}: {parsed.rows} rows, {verb} {len(parsed.records)} "
        f"({result.inserted} new, {result.updated} updated, {result.unchanged} unchanged), "
        f"{parsed.rejected} rejected"
    )
    if dry_run:
        text += " (dry run: nothing written)"
    return text


_LIST = """
SELECT sensor_id, city, coalesce(kind, ''), coalesce(name, ''),
       coalesce(to_char(lat, 'FM990.000000'), ''), coalesce(to_char(lon, 'FM9990.000000'), ''),
       source, coalesce(to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), '')
FROM sensors
WHERE %(city)s::text IS NULL OR city = %(city)s
ORDER BY city, sensor_id
LIMIT %(limit)s
"""
_COUNT = "SELECT count(*) FROM sensors WHERE %(city)s::text IS NULL OR city = %(city)s"
_HEADERS = ("sensor_id", "city", "kind", "name", "lat", "lon", "source", "last_seen")


def run_list(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    params = {"city": args.city.lower() if args.city else None, "limit": max(args.limit, 0)}
    try:
        with psycopg.connect(
            settings.db.dsn.get_secret_value(), application_name="nakhon-sensors"
        ) as conn:
            rows = [tuple(str(v) for v in row) for row in conn.execute(_LIST, params)]
            count_row = conn.execute(_COUNT, params).fetchone()
    except psycopg.OperationalError as exc:
        print(f"error: cannot reach the database: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    total = int(count_row[0]) if count_row is not None else len(rows)
    print(table(_HEADERS, rows))
    if total > len(rows):
        print(f"({len(rows)} of {total} sensors shown; use --limit)")
    else:
        print(f"({total} sensors)")
    return EXIT_OK


def table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A plain left-aligned text table."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)
