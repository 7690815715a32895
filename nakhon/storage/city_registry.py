"""The city registry: validated :class:`CityRecord` in, rows of ``cities`` out.

Cities are registered, not invented (docs/architecture.md): the processor stores readings
only under a city of this table, and ``nakhon sensors import`` places sensors
only in one. ``nakhon cities add|list|import`` (``cities_command.py``) is the
operator's door to it.

Writing a city is an upsert that reports what it did: ``created``,
``updated`` (with each field's old and new value) or ``unchanged``. The given
values replace the stored ones (``lat``/``lon`` left out mean "no known
centre"), except ``note``: left out (None), the stored note is kept; an empty
note clears it. The table is small (dozens of rows) and written by hand, so
each row is its own lock-compare-write: clarity over batching here.

Import files: CSV with a header row (``id`` or ``city_id``, ``name_en``,
``name_th``, ``province``, and optionally ``lat``, ``lon``, ``note``; header
names case-insensitive), or JSON: a list of objects with the same keys (what
``nakhon cities list --json`` prints, whose ``created_at`` and ``updated_at``
are ignored). Parsing is per row: a bad row is a :class:`RowError` naming its
line (CSV) or index (JSON), and the good rows are still imported, all in one
transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nakhon.domain.identifiers import is_city_id
from nakhon.storage.table_file import RowError, csv_table, read_text

CityFormat = Literal["csv", "json"]
EXTENSIONS: Mapping[str, CityFormat] = {".csv": "csv", ".json": "json"}

#: The fields a city has, in the order they are shown and compared.
FIELDS = ("name_en", "name_th", "province", "lat", "lon", "note")
#: Import header / JSON key (lower-cased) -> CityRecord field.
COLUMNS: Mapping[str, str] = {
    "id": "city_id",
    "city_id": "city_id",
    **{name: name for name in FIELDS},
}
#: JSON keys ``nakhon cities list --json`` adds, which an import ignores.
READ_ONLY_KEYS = frozenset({"created_at", "updated_at"})
_REQUIRED = ("city_id", "name_en", "name_th", "province")
ID_RULE = "1–64 characters of a-z, 0-9 or '_' (no '-')"

Action = Literal["created", "updated", "unchanged"]


class CityFileError(Exception):
    """The file as a whole cannot be read as a list of cities."""


class CityRecord(BaseModel):
    """One city as an operator describes it (a row of ``cities``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    city_id: str
    name_en: str = Field(min_length=1)
    name_th: str = Field(min_length=1)
    province: str = Field(min_length=1)
    lat: float | None = Field(default=None, ge=-90.0, le=90.0, allow_inf_nan=False)
    lon: float | None = Field(default=None, ge=-180.0, le=180.0, allow_inf_nan=False)
    #: What of the row is unverified. None: keep the stored note; "": clear it.
    note: str | None = None

    @field_validator("city_id", mode="before")
    @classmethod
    def _identifier(cls, value: object) -> object:
        """Lower-cased, and 1–64 of ``[a-z0-9_]``: what a topic's city level may be."""
        if not isinstance(value, str):
            return value  # pydantic reports the type
        lowered = value.strip().lower()
        if not is_city_id(lowered):
            raise ValueError(f"must be {ID_RULE} (got {value[:80]!r})")
        return lowered

    @field_validator("lat", "lon", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _position_whole(self) -> CityRecord:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon must be given together (or both left out)")
        return self


@dataclass(frozen=True, slots=True)
class StoredCity:
    """A row of ``cities``."""

    city_id: str
    name_en: str
    name_th: str
    province: str
    lat: float | None
    lon: float | None
    note: str | None
    created_at: datetime
    updated_at: datetime

    def as_json(self) -> dict[str, object]:
        """The row as ``nakhon cities list --json`` prints it (and an import reads it)."""
        return {
            "id": self.city_id,
            **{name: getattr(self, name) for name in FIELDS},
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Change:
    """One field an update changed."""

    field: str
    old: object
    new: object

    def __str__(self) -> str:
        return f"{self.field}: {_shown(self.old)} -> {_shown(self.new)}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What writing one city did."""

    city_id: str
    action: Action
    changes: tuple[Change, ...] = ()

    def __str__(self) -> str:
        if self.action != "updated":
            return f"{self.city_id}: {self.action}"
        return f"{self.city_id}: updated ({'; '.join(str(c) for c in self.changes)})"


def _shown(value: object) -> str:
    return "(none)" if value is None else repr(value)


@dataclass(slots=True)
class ParseResult:
    """The valid records of a file, and an error per problem of each rejected row."""

    records: list[CityRecord] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    #: Data rows (CSV lines with content, JSON list items) seen.
    rows: int = 0
    #: city id -> where its row is (``line 3``, ``[2]``), for the report.
    locations: dict[str, str] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return self.rows - len(self.records)


# --- parsing -----------------------------------------------------------------


def format_of(path: Path) -> CityFormat:
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise CityFileError(
            f"cannot tell the format of {path.name!r} from its extension; "
            "use --format csv or --format json"
        )
    return fmt


def load_cities(path: Path, fmt: CityFormat | None = None) -> ParseResult:
    """Read and parse a city file (UTF-8, a BOM is allowed)."""
    fmt = fmt or format_of(path)
    text = read_text(path, CityFileError)
    return parse_csv(text) if fmt == "csv" else parse_json(text)


def parse_csv(text: str) -> ParseResult:
    """Records from CSV text with a header row (see the module docstring)."""
    header, rows = csv_table(text, CityFileError, "a CSV city list")
    columns = _columns(header)
    result = ParseResult()
    for where, row in rows:
        result.rows += 1
        if len(row) != len(columns):
            message = f"has {len(row)} fields, the header has {len(columns)}"
            result.errors.append(RowError(where, None, message))
            continue
        _accept(dict(zip(columns, row, strict=True)), where, result)
    return result


def _columns(header: list[str]) -> list[str]:
    columns: list[str] = []
    for raw in header:
        title = raw.strip()
        name = COLUMNS.get(title.lower())
        if name is None:
            known = ", ".join(["id", *FIELDS])
            raise CityFileError(f"line 1: unknown column {title!r} (columns: {known})")
        if name in columns:
            raise CityFileError(f"line 1: two columns give {name}")
        columns.append(name)
    missing = [name for name in _REQUIRED if name not in columns]
    if missing:
        wanted = ", ".join("id" if m == "city_id" else m for m in missing)
        raise CityFileError(f"line 1: the header has no {wanted} column")
    return columns


def parse_json(text: str) -> ParseResult:
    """Records from a JSON list of objects (see the module docstring)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CityFileError(
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    if not isinstance(document, list):
        raise CityFileError("a JSON city list is a list of objects")
    result = ParseResult()
    for index, item in enumerate(document):
        result.rows += 1
        where = f"[{index}]"
        if not isinstance(item, dict):
            result.errors.append(RowError(where, None, "is not an object"))
            continue
        fields: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in item.items():
            if key in READ_ONLY_KEYS:
                continue
            name = COLUMNS.get(key)
            if name is None or name in fields:
                unknown.append(key)
            else:
                fields[name] = value
        if unknown:
            known = ", ".join(["id", *FIELDS])
            for key in unknown:
                message = f"unknown or repeated key (keys: {known})"
                result.errors.append(RowError(where, key[:64], message))
            continue
        _accept(fields, where, result)
    return result


def _accept(fields: dict[str, Any], where: str, result: ParseResult) -> None:
    """Validate one row's fields; append the record, or its errors."""
    try:
        record = CityRecord.model_validate(fields)
    except ValidationError as exc:
        result.errors.extend(_row_errors(where, exc))
        return
    if record.city_id in result.locations:
        message = f"{record.city_id!r} is already on {result.locations[record.city_id]}"
        result.errors.append(RowError(where, "city_id", message))
        return
    result.locations[record.city_id] = where
    result.records.append(record)


def _row_errors(where: str, exc: ValidationError) -> Iterable[RowError]:
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        message = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        if loc and error["type"] != "value_error" and isinstance(given, str | int | float):
            message += f" (got {given!r:.80})"
        yield RowError(where, ".".join(loc) or None, message)


# --- the database --------------------------------------------------------------

_SELECT = (
    "SELECT city_id, name_en, name_th, province, lat, lon, note, created_at, updated_at FROM cities"
)
_LOCK = (
    "SELECT name_en, name_th, province, lat, lon, note FROM cities WHERE city_id = %s FOR UPDATE"
)
_INSERT = """
INSERT INTO cities (city_id, name_en, name_th, province, lat, lon, note)
VALUES (%(city_id)s, %(name_en)s, %(name_th)s, %(province)s, %(lat)s, %(lon)s, %(note)s)
ON CONFLICT (city_id) DO NOTHING
RETURNING city_id
"""
_UPDATE = """
UPDATE cities
SET name_en = %(name_en)s, name_th = %(name_th)s, province = %(province)s,
    lat = %(lat)s, lon = %(lon)s, note = %(note)s, updated_at = now()
WHERE city_id = %(city_id)s
"""


def list_cities(conn: psycopg.Connection[Any]) -> list[StoredCity]:
    """Every registered city, ordered by id."""
    rows = conn.execute(_SELECT + " ORDER BY city_id").fetchall()
    return [StoredCity(*row) for row in rows]


def add_city(conn: psycopg.Connection[Any], record: CityRecord) -> Outcome:
    """Create or update one city, in its own transaction (a savepoint if one is open)."""
    with conn.transaction(), conn.cursor() as cur:
        return _upsert(cur, record)


def import_cities(
    conn: psycopg.Connection[Any], records: Sequence[CityRecord], *, dry_run: bool = False
) -> list[Outcome]:
    """Upsert ``records`` in one transaction (rolled back when ``dry_run``), one outcome each.

    Rows are locked in id order, so two imports at once cannot deadlock.
    Outcomes are in the order of ``records``. Raises psycopg.Error if the
    database refuses; then nothing of the import is written.
    """
    outcomes: dict[str, Outcome] = {}
    with conn.transaction(force_rollback=dry_run), conn.cursor() as cur:
        for record in sorted(records, key=lambda r: r.city_id):
            outcomes[record.city_id] = _upsert(cur, record)
    return [outcomes[r.city_id] for r in records]


def _upsert(cur: psycopg.Cursor[Any], record: CityRecord) -> Outcome:
    wanted: dict[str, object] = record.model_dump()
    # Two tries: an INSERT that finds the id taken (another transaction created
    # it since our SELECT) is followed by the comparison with that row.
    for _ in range(2):
        row = cur.execute(_LOCK, (record.city_id,)).fetchone()
        if row is None:
            wanted["note"] = record.note or None
            if cur.execute(_INSERT, wanted).fetchone() is not None:
                return Outcome(record.city_id, "created")
            continue
        stored = dict(zip(FIELDS, row, strict=True))
        wanted["note"] = stored["note"] if record.note is None else (record.note or None)
        changes = tuple(
            Change(name, stored[name], wanted[name])
            for name in FIELDS
            if stored[name] != wanted[name]
        )
        if not changes:
            return Outcome(record.city_id, "unchanged")
        cur.execute(_UPDATE, wanted)
        return Outcome(record.city_id, "updated", changes)
    raise RuntimeError(f"city {record.city_id!r} neither found nor inserted")  # pragma: no cover
