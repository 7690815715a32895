"""Field values as payloads spell them: numbers, ISO 8601 strings, epoch numbers.

Every time is an aware UTC datetime. A string without an offset is taken as
UTC (devices that omit it nearly always mean UTC; a wrong guess shows up in
the clock-offset metric rather than being silently dropped).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from nakhon.domain.records import Decoded, Observation, Rejection, Stage

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Epoch numbers are told apart by magnitude: 1e11 s is the year 5138, while
# 1e11 ms is 1973, so anything above is milliseconds, and so on for µs and ns.
_MS_FROM = 1e11
_US_FROM = 1e14
_NS_FROM = 1e17


class InvalidTime(ValueError):
    """A time value that is not a time."""


def parse_time(value: object) -> datetime:
    """An ISO 8601 string or an epoch number (s, ms, µs or ns) as an aware UTC datetime."""
    if isinstance(value, str):
        return parse_iso(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = as_number(value)
        assert seconds is not None  # an int or a float is a number
        return from_epoch(_epoch_seconds(seconds))
    raise InvalidTime(f"not a time: {type(value).__name__}")


def parse_iso(text: str) -> datetime:
    """An ISO 8601 date-time (``Z`` or an offset; nanoseconds truncated to µs)."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InvalidTime(f"not ISO 8601: {text[:60]!r}") from exc
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidTime(f"out of range: {text[:60]!r}") from exc


def from_epoch(seconds: float) -> datetime:
    """Seconds since 1970-01-01 UTC as an aware datetime."""
    if not math.isfinite(seconds):
        raise InvalidTime(f"not finite: {seconds!r}")
    try:
        return EPOCH + timedelta(seconds=seconds)
    except OverflowError as exc:
        raise InvalidTime(f"out of range: {seconds!r}") from exc


def _epoch_seconds(number: float) -> float:
    size = abs(number)
    if size >= _NS_FROM:
        return number / 1e9
    if size >= _US_FROM:
        return number / 1e6
    if size >= _MS_FROM:
        return number / 1e3
    return number


def as_number(value: object) -> float | None:
    """A JSON/CBOR number as a float (bools are not numbers); None for anything else.

    Never raises: an integer too large for a float (a CBOR bignum, ``10**400``)
    becomes an infinity of its sign, which normalization rejects as
    ``not_finite`` (and a time as ``invalid_time``); a signalling-NaN decimal
    becomes a NaN.
    """
    if type(value) is float:  # the hot path: most JSON numbers
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        try:
            return float(value)
        except OverflowError:  # only an int: a Decimal too large is already inf
            return math.inf if value > 0 else -math.inf
        except ValueError:  # Decimal("sNaN")
            return math.nan
    return None


def flatten_readings(
    document: dict[str, object], prefix: str = "", depth: int = 0
) -> dict[str, object]:
    """A decoder's object as flat ``name -> value`` (vendor and Cayenne LPP shapes).

    ``{"pm25": 12}`` stays; ``{"temperatureSensor": {"1": 27.5}}`` becomes
    ``{"temperatureSensor_1": 27.5}``; ``{"co2": {"value": 600, "unit": "ppm"}}``
    is kept whole (a value with its unit). Nesting deeper than three levels is
    kept as it is, for the caller to reject as not a number.
    """
    flat: dict[str, object] = {}
    for key, value in document.items():
        name = f"{prefix}_{key}" if prefix else key
        if isinstance(value, dict) and "value" not in value and depth < 2:
            flat.update(flatten_readings(value, name, depth + 1))
        else:
            flat[name] = value
    return flat


def value_and_unit(raw: object) -> tuple[float | None, str | None]:
    """A bare number, or ``{"value": <number>, "unit": "<unit>"}``."""
    if isinstance(raw, dict):
        unit = raw.get("unit")
        return as_number(raw.get("value")), unit if isinstance(unit, str) else None
    return as_number(raw), None


def add_readings(
    decoded: Decoded,
    readings: dict[str, object],
    sensor_id: str,
    time: datetime | None,
    units: dict[str, str] | None = None,
) -> None:
    """Append one observation per numeric value, one ``non_numeric_value`` rejection per other."""
    for name, raw in readings.items():
        value, unit = value_and_unit(raw)
        if value is None:
            decoded.rejections.append(
                Rejection(
                    "non_numeric_value",
                    f"{name[:80]} is not a number",
                    Stage.DECODE,
                    sensor_id=sensor_id,
                    metric=name[:80],
                )
            )
            continue
        if unit is None and units:
            unit = units.get(name)
        decoded.observations.append(Observation(sensor_id, name, value, unit, time))


def add_link_quality(
    decoded: Decoded,
    sensor_id: str,
    time: datetime | None,
    rssi: list[float | None],
    snr: list[float | None],
) -> None:
    """The best RSSI and SNR any gateway heard a LoRaWAN uplink with, as ``link_*`` readings."""
    for name, values in (("link_rssi", rssi), ("link_snr", snr)):
        heard = [value for value in values if value is not None]
        if heard:
            decoded.observations.append(Observation(sensor_id, name, max(heard), None, time))
