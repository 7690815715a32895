"""``position``: a vehicle fix, ``{"ts", "lat", "lon", "speed", "heading"}``.

The vehicle is the topic's sensor (``city/<city>/<vehicle_id>/position``).
``speed`` is km/h and ``heading`` degrees clockwise from north (docs/architecture.md); both
are optional. ``lat``/``lon`` are WGS 84 decimal degrees and required. A
top-level array is a batch of fixes (a tracker that buffered while offline).
Range checks (lat/lon, speed, heading) are normalization's, not the codec's.
"""

from __future__ import annotations

import orjson

from nakhon.domain.records import Decoded, PositionFix
from nakhon.processors.codecs.base import DecodeError, TopicContext
from nakhon.processors.codecs.fields import InvalidTime, as_number, parse_time


class PositionCodec:
    """``position``: one vehicle fix (or an array of them) as JSON."""

    name = "position"

    def decode(self, payload: bytes, ctx: TopicContext) -> Decoded:
        return decode_position(payload, ctx)


def decode_position(payload: bytes, ctx: TopicContext) -> Decoded:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed_json", str(exc)[:200]) from exc
    if ctx.sensor_id is None:
        raise DecodeError("missing_sensor_id", "a position topic names its vehicle")
    fixes = document if isinstance(document, list) else [document]
    return Decoded(positions=[_fix(item, ctx.sensor_id) for item in fixes])


def _fix(item: object, vehicle_id: str) -> PositionFix:
    if not isinstance(item, dict):
        raise DecodeError("malformed_payload", "a fix is a JSON object")
    lat = as_number(item.get("lat"))
    lon = as_number(item.get("lon", item.get("lng")))
    if lat is None or lon is None:
        raise DecodeError("malformed_position", "lat and lon must be numbers")
    time = None
    if item.get("ts") is not None:
        try:
            time = parse_time(item["ts"])
        except InvalidTime as exc:
            raise DecodeError("invalid_time", f"ts: {exc}") from exc
    return PositionFix(
        vehicle_id=vehicle_id,
        lat=lat,
        lon=lon,
        speed_kmh=as_number(item.get("speed")),
        heading=as_number(item.get("heading")),
        time=time,
    )
