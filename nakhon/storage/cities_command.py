"""``nakhon cities add|list|import``: the registry of cities readings may belong to."""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
from pydantic import ValidationError

from nakhon.cli import configure_logging
from nakhon.config import load_settings
from nakhon.storage.city_registry import (
    ID_RULE,
    CityFileError,
    CityFormat,
    CityRecord,
    Outcome,
    ParseResult,
    StoredCity,
    add_city,
    import_cities,
    list_cities,
    load_cities,
)

#: Exit codes of ``nakhon cities``.
EXIT_OK = 0
EXIT_ROWS_REJECTED = 1
EXIT_INVALID = 2
EXIT_DATABASE = 3

_EXIT_CODES = """\
Exit codes: 0 done; 2 invalid input (nothing written); 3 the database cannot
be reached, or has no cities table (run nakhon migrate)."""

_DESCRIPTION = """\
Cities are registered, not invented: the processor dead-letters readings of a
city missing from the table cities (reason unknown_city), and nakhon sensors
import refuses sensors of one. A city id is what MQTT topics carry
(city/<id>/<sensor_id>/<format>): 1-64 of a-z 0-9 _ (lower-cased; no '-').
The database is NAKHON_DB_DSN."""

_ADD_HELP = f"""\
Register a city, or change a registered one.

Adding an id that exists with the same values changes nothing and prints
"unchanged"; with other values it updates the city and prints each change
(field: old -> new). The values given replace the stored ones: leaving out
--lat/--lon clears a known centre. --note is kept unless given (--note ''
clears it).

Example:
  nakhon cities add udon_thani --name-en "Udon Thani" --name-th อุดรธานี \\
      --province "Udon Thani" --lat 17.415 --lon 102.787

{_EXIT_CODES}
"""

_IMPORT_HELP = """\
Register or update cities from a file, in one transaction; prints what
happened to each row (created, updated with its changes, unchanged).

CSV: a header row, then one city per line. Columns (header names are
case-insensitive, order is free):
  id (or city_id)       required; 1-64 of a-z 0-9 _ (lower-cased)
  name_en, name_th      required; the English and Thai names
  province              required
  lat, lon              optional, WGS 84 degrees of the centre; both or neither
  note                  optional: what of the row is unverified (an empty
                        cell clears it; without the column, notes are kept)
Example:
  id,name_en,name_th,province,lat,lon
  udon_thani,Udon Thani,อุดรธานี,Udon Thani,17.415,102.787

JSON: a list of objects with the same keys, e.g. the output of
nakhon cities list --json (its created_at and updated_at are ignored).

Importing the same file twice changes nothing: every row is unchanged.

Exit codes: 0 every row imported; 1 some rows rejected (the good rows are
still imported, each rejection is printed with its line and field); 2 the
file cannot be read as a city list; 3 the database cannot be reached, or has
no cities table (run nakhon migrate).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cities",
        help="the city registry: add, list, import cities",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = p.add_subparsers(title="commands", metavar="COMMAND", required=True)

    add = commands.add_parser(
        "add",
        help="register a city (or update one)",
        description=_ADD_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("city_id", metavar="ID", help=f"the city id: {ID_RULE}")
    add.add_argument("--name-en", required=True, metavar="NAME", help="English name")
    add.add_argument("--name-th", required=True, metavar="NAME", help="Thai name")
    add.add_argument("--province", required=True, help="the province it lies in")
    add.add_argument("--lat", type=float, help="latitude of the centre, -90..90 (with --lon)")
    add.add_argument("--lon", type=float, help="longitude of the centre, -180..180 (with --lat)")
    add.add_argument("--note", help="what of this row is unverified ('' clears the note)")
    add.set_defaults(func=run_add)

    ls = commands.add_parser(
        "list",
        help="print the registered cities",
        description="Print the registered cities, ordered by id.",
    )
    ls.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of objects (which nakhon cities import reads back)",
    )
    ls.set_defaults(func=run_list)

    imp = commands.add_parser(
        "import",
        help="register or update cities from a CSV or JSON file",
        description=_IMPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("file", metavar="FILE", type=Path, help="the city file")
    imp.add_argument(
        "--format",
        choices=["csv", "json"],
        default=None,
        help="file format (default: by extension: .csv or .json)",
    )
    imp.add_argument(
        "--dry-run",
        action="store_true",
        help="report what would change, then roll back (needs the database)",
    )
    imp.set_defaults(func=run_import)


def run_add(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        record = CityRecord(
            city_id=args.city_id,
            name_en=args.name_en,
            name_th=args.name_th,
            province=args.province,
            lat=args.lat,
            lon=args.lon,
            note=args.note,
        )
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"])
            option = {"city_id": "ID"}.get(where, f"--{where.replace('_', '-')}")
            message = error["msg"].removeprefix("Value error, ")
            print(f"error: {option}: {message}" if where else f"error: {message}", file=sys.stderr)
        return EXIT_INVALID
    try:
        with _connect(settings.db.dsn.get_secret_value()) as conn:
            outcome = add_city(conn, record)
    except _DatabaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    print(describe(outcome))
    return EXIT_OK


def describe(outcome: Outcome) -> str:
    """What ``nakhon cities add`` says it did."""
    if outcome.action == "created":
        return f"created city {outcome.city_id}"
    if outcome.action == "unchanged":
        return f"unchanged: city {outcome.city_id} is already registered with these values"
    lines = [f"updated city {outcome.city_id}:"]
    lines += [f"  {change}" for change in outcome.changes]
    return "\n".join(lines)


def run_list(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        with _connect(settings.db.dsn.get_secret_value()) as conn:
            cities = list_cities(conn)
    except _DatabaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    if args.json:
        print(json.dumps([c.as_json() for c in cities], ensure_ascii=False, indent=2))
    else:
        print(city_table(cities))
        print(f"({len(cities)} cities)")
    return EXIT_OK


def run_import(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    path: Path = args.file
    fmt: CityFormat | None = args.format
    try:
        parsed = load_cities(path, fmt)
    except CityFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    for error in parsed.errors:
        print(f"rejected: {error}", file=sys.stderr)
    outcomes: list[Outcome] = []
    if parsed.records:
        try:
            with _connect(settings.db.dsn.get_secret_value()) as conn:
                outcomes = import_cities(conn, parsed.records, dry_run=args.dry_run)
        except _DatabaseError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_DATABASE
    for outcome in outcomes:
        print(f"{parsed.locations[outcome.city_id]}: {outcome}")
    print(import_summary(path, parsed, outcomes, dry_run=args.dry_run))
    return EXIT_ROWS_REJECTED if parsed.rejected else EXIT_OK


def import_summary(
    path: Path, parsed: ParseResult, outcomes: Sequence[Outcome], *, dry_run: bool
) -> str:
    counts = {action: 0 for action in ("created", "updated", "unchanged")}
    for outcome in outcomes:
        counts[outcome.action] += 1
    text = (
        f"{path.name}: {parsed.rows} rows, {counts['created']} created, "
        f"{counts['updated']} updated, {counts['unchanged']} unchanged, "
        f"{parsed.rejected} rejected"
    )
    if dry_run:
        text += " (dry run: nothing written)"
    return text


class _DatabaseError(Exception):
    """The database cannot be reached, or lacks the cities table: one message for the user."""


@contextmanager
def _connect(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection whose failures the commands report as :class:`_DatabaseError`."""
    try:
        with psycopg.connect(dsn, application_name="nakhon-cities") as conn:
            yield conn
    except psycopg.OperationalError as exc:
        raise _DatabaseError(f"cannot reach the database: {exc}") from exc
    except psycopg.errors.UndefinedTable as exc:
        raise _DatabaseError(f"{exc.diag.message_primary}: run nakhon migrate") from exc


_HEADERS = ("id", "name_en", "name_th", "province", "lat", "lon", "note")


def city_table(cities: Sequence[StoredCity]) -> str:
    """A plain left-aligned text table (Thai combining marks take no column)."""
    rows = [
        (
            c.city_id,
            c.name_en,
            c.name_th,
            c.province,
            "" if c.lat is None else f"{c.lat:.6g}",
            "" if c.lon is None else f"{c.lon:.7g}",
            c.note or "",
        )
        for c in cities
    ]
    widths = [display_width(h) for h in _HEADERS]
    for row in rows:
        widths = [max(w, display_width(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [_line(_HEADERS, widths), "  ".join("-" * w for w in widths)]
    lines += [_line(row, widths) for row in rows]
    return "\n".join(lines)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    padded = [c + " " * (w - display_width(c)) for c, w in zip(cells, widths, strict=True)]
    return "  ".join(padded).rstrip()


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: combining marks none, wide characters two."""
    width = 0
    for char in text:
        if unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width
