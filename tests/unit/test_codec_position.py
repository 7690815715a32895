"""The vehicle position codec."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nakhon.processors.codecs import CODECS, get_codec
from nakhon.processors.codecs.base import DecodeError, TopicContext
from nakhon.processors.normalize import NormalizePolicy, normalize

NOW = datetime(2024, 3, 1, 1, 0, tzinfo=UTC)
CTX = TopicContext("city/bangkok/bus-12/position", "bangkok", "bus-12", NOW)
CODEC = get_codec("position")


def test_fix() -> None:
    payload = b'{"ts": 1709254800, "lat": 13.756, "lon": 100.502, "speed": 32.5, "heading": 270}'
    decoded = CODEC.decode(payload, CTX)
    out = normalize(decoded, CTX, NormalizePolicy())
    (position,) = out.positions
    assert (position.vehicle_id, position.lat, position.lon) == ("bus-12", 13.756, 100.502)
    assert (position.speed_kmh, position.heading, position.time) == (32.5, 270.0, NOW)
    assert position.city == "bangkok"


def test_batch_and_optional_fields() -> None:
    decoded = CODEC.decode(b'[{"lat": 18.788, "lon": 98.985}, {"lat": 18.79, "lon": 98.99}]', CTX)
    assert [(p.speed_kmh, p.heading, p.time) for p in decoded.positions] == [(None, None, None)] * 2


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"x", "malformed_json"),
        (b'{"lat": "13.7", "lon": 100.5}', "malformed_position"),
        (b'{"lon": 100.5}', "malformed_position"),
        (b'{"lat": 13.7, "lon": 100.5, "ts": "later"}', "invalid_time"),
        (b"[1]", "malformed_payload"),
    ],
)
def test_errors(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(payload, CTX)
    assert caught.value.reason == reason


def test_registry() -> None:
    assert set(CODECS) == {
        "senml", "senml-cbor", "json", "position", "ngsi", "tts-v3", "chirpstack-v4",
    }  # fmt: skip
    assert all(codec.name == name for name, codec in CODECS.items())
    with pytest.raises(KeyError, match="known"):
        get_codec("xml")
