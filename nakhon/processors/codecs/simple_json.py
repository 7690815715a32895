"""``json``: Nakhon's simple JSON for devices that speak no standard format.

Shapes (docs/architecture.md, "Wire contract for devices")::

    {"ts": "2024-03-01T08:00:00+07:00", "pm25": 41.2, "temperature": 31.5}
    {"ts": 1709254800, "readings": {"pm25": 41.2}, "units": {"pm25": "ug/m3"}}

- ``ts``: ISO 8601, or epoch seconds / milliseconds (told apart by size, see
  :mod:`.fields`); absent means "when received". An unreadable ``ts``
  rejects the payload (it would misdate every value in it).
- A value is a JSON number, or ``{"value": <number>, "unit": "<unit>"}``.
- ``unit`` / ``units``: an optional map of metric name -> unit for the values.
- ``sensor_id``: read only where the topic names no sensor.
- A top-level array of such objects is a batch (a device that buffered).
Anything else under a metric name (text, true/false, null, a list) is rejected
per value with ``non_numeric_value``; the numbers next to it are kept.
"""

from __future__ import annotations

from datetime import datetime

import orjson

from nakhon.domain.records import Decoded
from nakhon.processors.codecs.base import DecodeError, TopicContext
from nakhon.processors.codecs.fields import InvalidTime, add_readings, parse_time

_TIME_KEYS = ("ts", "time", "timestamp")
_RESERVED = frozenset({*_TIME_KEYS, "unit", "units", "readings", "sensor_id"})


class SimpleJsonCodec:
    """``json``: ``{"ts": ..., "<metric>": <number>, ...}``."""

    name = "json"

    def decode(self, payload: bytes, ctx: TopicContext) -> Decoded:
        return decode_simple_json(payload, ctx)


def decode_simple_json(payload: bytes, ctx: TopicContext) -> Decoded:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed_json", str(exc)[:200]) from exc
    decoded = Decoded()
    if isinstance(document, list):
        for item in document:
            _decode_object(item, ctx, decoded)
    else:
        _decode_object(document, ctx, decoded)
    return decoded


def _decode_object(document: object, ctx: TopicContext, decoded: Decoded) -> None:
    if not isinstance(document, dict):
        raise DecodeError("malformed_payload", "expected a JSON object")
    sensor_id = ctx.sensor_id or document.get("sensor_id")
    if not isinstance(sensor_id, str) or not sensor_id:
        raise DecodeError("missing_sensor_id", "the topic names no sensor and sensor_id is absent")
    time = _time(document)
    units = _units(document)
    readings = document.get("readings", document)
    if not isinstance(readings, dict):
        raise DecodeError("malformed_payload", "readings is not an object")
    if readings is document:
        readings = {k: v for k, v in document.items() if k not in _RESERVED}
    add_readings(decoded, readings, sensor_id, time, units)


def _time(document: dict[str, object]) -> datetime | None:
    for key in _TIME_KEYS:
        if key in document:
            try:
                return parse_time(document[key])
            except InvalidTime as exc:
                raise DecodeError("invalid_time", f"{key}: {exc}") from exc
    return None


def _units(document: dict[str, object]) -> dict[str, str]:
    units = document.get("units", document.get("unit"))
    if units is None or isinstance(units, str):
        return {}
    if not isinstance(units, dict):
        raise DecodeError("malformed_payload", "units is not an object")
    return {name: unit for name, unit in units.items() if isinstance(unit, str)}
