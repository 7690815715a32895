"""The sensor registry file: CSV or GeoJSON in, validated :class:`SensorRecord` out, upserted.

Operators keep the city's sensors in a spreadsheet or a GIS layer; ``nakhon
sensors import`` turns that file into rows of ``sensors`` with
``source = 'registry'``. Parsing is pure and forgiving per row: every bad row
becomes a :class:`RowError` naming its line (CSV) or feature (GeoJSON) and the
field, and the good rows are still imported. Only a file that cannot be read
as a registry at all (unreadable, not UTF-8, malformed JSON, no ``id`` or
``city`` column) raises :class:`RegistryFileError`.

CSV: a header row; columns ``id`` (or ``sensor_id``), ``city``, ``kind``,
``name``, ``lat`` (or ``latitude``), ``lon`` (or ``lng``, ``longitude``), an
optional ``metadata`` column holding a JSON object, and any other column,
which goes into ``metadata`` under its header (empty cells are left out).
Header names are matched case-insensitively.

GeoJSON (RFC 7946): a FeatureCollection (or one Feature) of ``Point``
features, ``coordinates`` ``[lon, lat]`` (an altitude third goes into
``metadata.altitude``); ``properties`` ``id``/``sensor_id`` (else the
feature's own ``id``), ``city``, ``kind``, ``name``; every other property goes
into ``metadata`` (a ``metadata`` object property is merged in). A feature
with a null geometry is a sensor without a known position.

The import is one transaction: one ``COPY`` into a staging table, then one
``INSERT ... ON CONFLICT DO UPDATE`` that skips rows that would not change, so
importing the same file twice reports every row ``unchanged``. A sensor whose
city is not registered (table ``cities``, ``nakhon cities add``) is refused,
the others still imported: cities are registered, not invented (docs/architecture.md).
The registry is authoritative for the columns it describes (city, kind, name,
lat, lon, metadata: the file's values replace the row's); ``first_seen`` and
``last_seen`` belong to the data path and are never touched.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psycopg
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from nakhon.domain.identifiers import valid_sensor_id
from nakhon.storage.table_file import RowError, csv_table, read_text

RegistryFormat = Literal["csv", "geojson"]

#: File extension -> format, for ``--format`` left out.
EXTENSIONS: Mapping[str, RegistryFormat] = {
    ".csv": "csv",
    ".geojson": "geojson",
    ".json": "geojson",
}

#: CSV header (lower-cased) -> SensorRecord field; every other column is metadata.
CSV_COLUMNS: Mapping[str, str] = {
    "id": "sensor_id",
    "sensor_id": "sensor_id",
    "city": "city",
    "kind": "kind",
    "name": "name",
    "lat": "lat",
    "latitude": "lat",
    "lon": "lon",
    "lng": "lon",
    "longitude": "lon",
    "metadata": "metadata",
}
_REQUIRED = ("sensor_id", "city")
_ID_RULE = "1–64 characters of a-z, 0-9, '_' or '-'"


class RegistryFileError(Exception):
    """The file as a whole cannot be read as a sensor registry."""


class SensorRecord(BaseModel):
    """One sensor as the registry describes it (a row of ``sensors``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    sensor_id: str
    city: str
    kind: str | None = None
    name: str | None = None
    lat: float | None = Field(default=None, ge=-90.0, le=90.0, allow_inf_nan=False)
    lon: float | None = Field(default=None, ge=-180.0, le=180.0, allow_inf_nan=False)
    metadata: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("sensor_id", "city", mode="before")
    @classmethod
    def _identifier(cls, value: object) -> object:
        """Lower-cased, and 1–64 of ``[a-z0-9_-]`` like the ids in MQTT topics."""
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # GeoJSON feature ids may be numbers
        if not isinstance(value, str):
            return value  # pydantic reports the type
        valid = valid_sensor_id(value.strip())
        if valid is None:
            raise ValueError(f"must be {_ID_RULE} (got {value[:80]!r})")
        return valid

    @field_validator("kind", "name", "lat", "lon", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _position_whole(self) -> SensorRecord:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon must be given together (or both left empty)")
        return self


@dataclass(slots=True)
class ParseResult:
    """The valid records of a file, and an error per problem of each rejected row."""

    records: list[SensorRecord] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    #: Data rows (CSV lines with content, GeoJSON features) seen.
    rows: int = 0
    #: sensor id -> where its row is (``line 7``, ``features[3] (id 'x')``).
    locations: dict[str, str] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return self.rows - len(self.records)

    def refuse(self, refused: Sequence[SensorRecord]) -> list[RowError]:
        """Move records the import refused (city not registered) to the errors; return those."""
        ids = {r.sensor_id for r in refused}
        self.records = [r for r in self.records if r.sensor_id not in ids]
        new = [
            RowError(self.locations.get(r.sensor_id, repr(r.sensor_id)), None, unregistered(r.city))
            for r in refused
        ]
        self.errors.extend(new)
        return new


def unregistered(city: str) -> str:
    """Why a sensor of an unregistered city is refused."""
    return f"city {city!r} is not registered; add it with nakhon cities add"


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did to ``sensors``."""

    inserted: int
    updated: int
    unchanged: int
    #: Records not imported because their city is not registered.
    refused: tuple[SensorRecord, ...] = ()


# --- parsing -----------------------------------------------------------------


def format_of(path: Path) -> RegistryFormat:
    """The format a file's extension implies; raises RegistryFileError if none does."""
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise RegistryFileError(
            f"cannot tell the format of {path.name!r} from its extension; "
            "use --format csv or --format geojson"
        )
    return fmt


def load_registry(path: Path, fmt: RegistryFormat | None = None) -> ParseResult:
    """Read and parse a registry file (UTF-8, a BOM is allowed)."""
    fmt = fmt or format_of(path)
    text = read_text(path, RegistryFileError)
    return parse_csv(text) if fmt == "csv" else parse_geojson(text)


def parse_csv(text: str) -> ParseResult:
    """Records from CSV text with a header row (see the module docstring)."""
    header, rows = csv_table(text, RegistryFileError, "a CSV registry")
    columns = _csv_columns(header)
    result = ParseResult()
    for where, row in rows:
        result.rows += 1
        if len(row) != len(columns):
            message = f"has {len(row)} fields, the header has {len(columns)}"
            result.errors.append(RowError(where, None, message))
            continue
        fields, problems = _csv_fields(columns, row)
        _accept(fields, where, problems, result.locations, result)
    return result


def _csv_columns(header: list[str]) -> list[tuple[str, str]]:
    """(field, original header) per column; field is ``metadata:<header>`` for extra columns."""
    columns: list[tuple[str, str]] = []
    taken: dict[str, str] = {}
    for raw in header:
        title = raw.strip()
        if not title:
            raise RegistryFileError("line 1: a column has no name")
        name = CSV_COLUMNS.get(title.lower(), f"metadata:{title}")
        if name in taken:
            raise RegistryFileError(
                f"line 1: columns {taken[name]!r} and {title!r} both give {name.split(':')[-1]}"
            )
        taken[name] = title
        columns.append((name, title))
    missing = [name for name in _REQUIRED if name not in taken]
    if missing:
        wanted = " and ".join("id (or sensor_id)" if m == "sensor_id" else m for m in missing)
        raise RegistryFileError(f"line 1: the header has no {wanted} column")
    return columns


def _csv_fields(
    columns: list[tuple[str, str]], row: list[str]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    fields: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for (name, title), cell in zip(columns, row, strict=True):
        if name == "metadata":
            if cell.strip():
                parsed = _json_object(cell)
                if isinstance(parsed, str):
                    problems.append(("metadata", parsed))
                else:
                    _merge(metadata, parsed, problems)
        elif name.startswith("metadata:"):
            if cell.strip():
                _merge(metadata, {title: cell.strip()}, problems)
        else:
            fields[name] = cell
    fields["metadata"] = metadata
    return fields, problems


def _json_object(text: str) -> dict[str, Any] | str:
    """The JSON object in a cell, or a message saying why it is not one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not valid JSON ({exc.msg} at character {exc.pos})"
    if not isinstance(value, dict):
        return f"must be a JSON object (got {type(value).__name__})"
    return value


def _merge(into: dict[str, Any], more: Mapping[str, Any], problems: list[tuple[str, str]]) -> None:
    for key, value in more.items():
        if key in into:
            problems.append(("metadata", f"key {key!r} given twice"))
        into[key] = value


def parse_geojson(text: str) -> ParseResult:
    """Records from a GeoJSON FeatureCollection of Points (see the module docstring)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryFileError(
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    if isinstance(document, dict) and document.get("type") == "Feature":
        features: object = [document]
    elif isinstance(document, dict) and document.get("type") == "FeatureCollection":
        features = document.get("features")
    else:
        raise RegistryFileError("a GeoJSON registry is a FeatureCollection (or one Feature)")
    if not isinstance(features, list):
        raise RegistryFileError("the FeatureCollection has no features array")
    result = ParseResult()
    seen = result.locations
    for index, feature in enumerate(features):
        result.rows += 1
        where = f"features[{index}]"
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            result.errors.append(RowError(where, None, "is not a GeoJSON Feature"))
            continue
        fields, problems = _feature_fields(feature)
        if isinstance(fields.get("sensor_id"), str):
            where += f" (id {fields['sensor_id'][:64]!r})"
        _accept(fields, where, problems, seen, result)
    return result


def _feature_fields(feature: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    properties = feature.get("properties")
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        problems.append(("properties", "must be an object"))
        properties = {}
    fields: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    id_keys = [key for key in ("sensor_id", "id") if key in properties]
    if len(id_keys) == 2:
        problems.append(("sensor_id", "both id and sensor_id are given"))
    if id_keys:
        fields["sensor_id"] = properties[id_keys[0]]
    elif "id" in feature:
        fields["sensor_id"] = feature["id"]
    for key, value in properties.items():
        if key in ("id", "sensor_id"):
            continue
        if key in ("city", "kind", "name"):
            fields[key] = value
        elif key == "metadata":
            if isinstance(value, dict):
                _merge(metadata, value, problems)
            else:
                problems.append(("metadata", "must be an object"))
        else:
            _merge(metadata, {key: value}, problems)
    _point(feature.get("geometry"), fields, metadata, problems)
    fields["metadata"] = metadata
    return fields, problems


def _point(
    geometry: object,
    fields: dict[str, Any],
    metadata: dict[str, Any],
    problems: list[tuple[str, str]],
) -> None:
    """lat/lon (and altitude) of a Point geometry; a null geometry is no position."""
    if geometry is None:
        return
    if not isinstance(geometry, dict) or geometry.get("type") != "Point":
        kind = geometry.get("type") if isinstance(geometry, dict) else type(geometry).__name__
        problems.append(("geometry", f"must be a Point (got {str(kind)[:40]})"))
        return
    coordinates = geometry.get("coordinates")
    numbers = (
        isinstance(coordinates, list)
        and len(coordinates) in (2, 3)
        and all(_is_number(c) for c in coordinates)
    )
    if not numbers:
        problems.append(("coordinates", "must be [lon, lat] or [lon, lat, altitude] numbers"))
        return
    assert isinstance(coordinates, list)
    fields["lon"], fields["lat"] = coordinates[0], coordinates[1]
    if len(coordinates) == 3:
        _merge(metadata, {"altitude": coordinates[2]}, problems)


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _accept(
    fields: dict[str, Any],
    where: str,
    problems: list[tuple[str, str]],
    seen: dict[str, str],
    result: ParseResult,
) -> None:
    """Validate one row's fields; append the record, or its errors."""
    errors = [RowError(where, name, message) for name, message in problems]
    record: SensorRecord | None = None
    try:
        record = SensorRecord.model_validate(fields)
    except ValidationError as exc:
        errors.extend(_row_errors(where, exc))
    if record is not None and record.sensor_id in seen:
        errors.append(
            RowError(
                where, "sensor_id", f"{record.sensor_id!r} is already on {seen[record.sensor_id]}"
            )
        )
    if errors:
        result.errors.extend(errors)
        return
    assert record is not None
    seen[record.sensor_id] = where
    result.records.append(record)


def _row_errors(where: str, exc: ValidationError) -> Iterator[RowError]:
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        name = ".".join(loc) if loc else None
        message = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        # Our own validators already quote the value; pydantic's messages do not.
        if name is not None and error["type"] != "value_error":
            if isinstance(given, str):
                message += f" (got {given[:80]!r})"
            elif isinstance(given, int | float):
                message += f" (got {given!r})"
        yield RowError(where, name, message)


# --- import ------------------------------------------------------------------

_STAGE_DDL = """
CREATE TEMP TABLE sensors_import (
    sensor_id text NOT NULL, city text NOT NULL, kind text, name text,
    lat double precision, lon double precision, metadata jsonb NOT NULL
) ON COMMIT DROP
"""
_COPY = (
    "COPY sensors_import (sensor_id, city, kind, name, lat, lon, metadata)"
    " FROM STDIN (FORMAT BINARY)"
)
_TYPES = ["text", "text", "text", "text", "float8", "float8", "jsonb"]

# Sorted by sensor_id so that this upsert and the processors' (writer.py) lock
# sensors rows in the same order and cannot deadlock each other. The WHERE
# skips rows the file would not change, which keeps a re-import a no-op (no
# dead tuples, ``unchanged`` in the report). ``xmax = 0`` on a RETURNING row
# means the row was inserted, not updated (PostgreSQL sets xmax on update).
_UPSERT = """
WITH merged AS (
    INSERT INTO sensors AS s (sensor_id, city, kind, name, lat, lon, metadata, source)
    SELECT sensor_id, city, kind, name, lat, lon, metadata, 'registry'
    FROM sensors_import ORDER BY sensor_id
    ON CONFLICT (sensor_id) DO UPDATE
    SET city = excluded.city, kind = excluded.kind, name = excluded.name,
        lat = excluded.lat, lon = excluded.lon, metadata = excluded.metadata,
        source = 'registry'
    WHERE (s.city, s.kind, s.name, s.lat, s.lon, s.metadata, s.source)
          IS DISTINCT FROM
          (excluded.city, excluded.kind, excluded.name, excluded.lat, excluded.lon,
           excluded.metadata, 'registry')
    RETURNING (s.xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged
"""

# Checked in the import's own transaction. Not locked (FOR KEY SHARE would
# need UPDATE on cities): nothing in Nakhon deletes a city.
_REGISTERED_CITIES = "SELECT city_id FROM cities WHERE city_id = ANY(%s)"

#: Progress is reported every this many staged records.
PROGRESS_EVERY = 10_000


def import_sensors(
    conn: psycopg.Connection[Any],
    records: Sequence[SensorRecord],
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Upsert ``records`` into ``sensors`` in one transaction (rolled back when ``dry_run``).

    Records whose city is not registered (``cities``) are not imported: they
    come back in :attr:`ImportResult.refused`, in their order.
    ``progress(done, total)`` is called as records are staged, every
    :data:`PROGRESS_EVERY` and at the end. ``records`` must have distinct
    sensor ids (:func:`parse_csv` and :func:`parse_geojson` guarantee it).
    The transaction commits on return, unless the caller already has one open
    on ``conn`` (then this is a savepoint of it). Raises psycopg.Error if the
    database refuses.
    """
    with conn.transaction(force_rollback=dry_run), conn.cursor() as cur:
        cities = sorted({r.city for r in records})
        registered = {row[0] for row in cur.execute(_REGISTERED_CITIES, (cities,))}
        refused = tuple(r for r in records if r.city not in registered)
        if refused:
            records = [r for r in records if r.city in registered]
        total = len(records)
        cur.execute(_STAGE_DDL)
        with cur.copy(_COPY) as copy:
            copy.set_types(_TYPES)
            for done, r in enumerate(records, 1):
                copy.write_row((r.sensor_id, r.city, r.kind, r.name, r.lat, r.lon, r.metadata))
                if progress is not None and done % PROGRESS_EVERY == 0:
                    progress(done, total)
        if progress is not None and total % PROGRESS_EVERY:
            progress(total, total)
        cur.execute(_UPSERT)
        row = cur.fetchone()
    assert row is not None
    inserted, updated = int(row[0]), int(row[1])
    return ImportResult(inserted, updated, total - inserted - updated, refused)
