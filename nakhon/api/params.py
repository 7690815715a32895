"""Parsing and validation of the query parameters that are more than one value.

Each parser raises :class:`ApiError` (400) with a message naming the parameter,
so a city app developer sees what to fix without reading the code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nakhon.api.errors import ApiError

#: Identifiers as the wire contract has them (docs/architecture.md): 1–64 of [a-z0-9_-].
ID_PATTERN = r"^[a-z0-9_-]{1,64}$"
METRIC_PATTERN = r"^[a-z0-9_]{1,64}$"
KIND_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"

_INTERVAL = re.compile(r"^([1-9][0-9]{0,5})(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_BUCKET = timedelta(days=366)


def parse_interval(name: str, text: str) -> timedelta:
    """``30s``, ``5m``, ``1h``, ``1d``, ``2w`` → a timedelta (1 s to 366 days)."""
    m = _INTERVAL.match(text)
    if not m:
        raise ApiError(
            400, "invalid_parameter", f"{name}: expected a number and a unit s|m|h|d|w, e.g. 5m"
        )
    value = timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    if value > MAX_BUCKET:
        raise ApiError(400, "invalid_parameter", f"{name}: at most {MAX_BUCKET.days} days")
    return value


def as_utc(value: datetime) -> datetime:
    """Times without a zone are taken as UTC (documented in the OpenAPI descriptions)."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00+05:00 is before year 1 in UTC
        raise ApiError(400, "invalid_parameter", f"time out of range: {value}") from exc


def _floats(name: str, text: str, count: int) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise ApiError(
            400, "invalid_parameter", f"{name}: expected {count} comma-separated numbers"
        )
    return values


@dataclass(frozen=True, slots=True)
class Near:
    lat: float
    lon: float
    radius_m: float


def parse_near(text: str, radius_m: float) -> Near:
    lat, lon = _floats("near", text, 2)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ApiError(
            400, "invalid_parameter", "near: lat must be in [-90, 90], lon in [-180, 180]"
        )
    return Near(lat, lon, radius_m)


@dataclass(frozen=True, slots=True)
class BBox:
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float


def parse_bbox(text: str) -> BBox:
    """GeoJSON order: ``min_lon,min_lat,max_lon,max_lat``."""
    box = BBox(*_floats("bbox", text, 4))
    if not (-180 <= box.min_lon <= box.max_lon <= 180 and -90 <= box.min_lat <= box.max_lat <= 90):
        raise ApiError(
            400,
            "invalid_parameter",
            "bbox: expected min_lon,min_lat,max_lon,max_lat with min <= max, in degrees",
        )
    return box


def check_range(start: datetime, end: datetime, longest: timedelta | None = None) -> None:
    if start >= end:
        raise ApiError(400, "invalid_range", "start must be before end")
    if longest is not None and end - start > longest:
        raise ApiError(
            400,
            "range_too_long",
            f"[start, end) spans {end - start}, more than the {longest} one request may ask for:"
            " split the range",
        )
