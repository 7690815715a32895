"""The simple JSON codec (name ``json``)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from nakhon.processors.codecs import get_codec
from nakhon.processors.codecs.base import DecodeError, TopicContext

NOW = datetime(2024, 3, 1, 1, 0, tzinfo=UTC)
CTX = TopicContext("city/bangkok/aq-1/json", "bangkok", "aq-1", NOW)
T0 = datetime(2024, 3, 1, 1, 0, tzinfo=UTC)
CODEC = get_codec("json")


@pytest.mark.parametrize(
    "ts", ["2024-03-01T08:00:00+07:00", "2024-03-01T01:00:00Z", 1709254800, 1709254800000]
)
def test_flat_form_and_time_spellings(ts: object) -> None:
    payload = orjson.dumps({"ts": ts, "pm25": 41.2, "temperature": 31})
    decoded = CODEC.decode(payload, CTX)
    assert [(o.sensor_id, o.name, o.value, o.time) for o in decoded.observations] == [
        ("aq-1", "pm25", 41.2, T0),
        ("aq-1", "temperature", 31.0, T0),
    ]


def test_readings_form_with_units() -> None:
    payload = orjson.dumps(
        {"ts": 1709254800, "readings": {"o3": 80, "co": {"value": 1.1, "unit": "mg/m3"}},
         "units": {"o3": "ug/m3"}}
    )  # fmt: skip
    decoded = CODEC.decode(payload, CTX)
    assert [(o.name, o.value, o.unit) for o in decoded.observations] == [
        ("o3", 80.0, "ug/m3"),
        ("co", 1.1, "mg/m3"),
    ]


def test_no_time_and_non_numbers() -> None:
    decoded = CODEC.decode(b'{"pm25": 5, "fw": "1.2", "ok": true, "pm10": null}', CTX)
    assert [(o.name, o.time) for o in decoded.observations] == [("pm25", None)]
    assert [r.reason for r in decoded.rejections] == ["non_numeric_value"] * 3


def test_batch_and_sensor_from_payload() -> None:
    ctx = TopicContext("devices/json", "bangkok", None, NOW)
    payload = b'[{"sensor_id": "a1", "pm25": 1}, {"sensor_id": "a2", "pm25": 2}]'
    decoded = CODEC.decode(payload, ctx)
    assert [o.sensor_id for o in decoded.observations] == ["a1", "a2"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b"42", "malformed_payload"),
        (b'{"ts": "yesterday", "pm25": 1}', "invalid_time"),
        (b'{"ts": true, "pm25": 1}', "invalid_time"),
        (b'{"readings": [1]}', "malformed_payload"),
        (b'{"units": [1], "pm25": 1}', "malformed_payload"),
    ],
)
def test_payload_errors(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(payload, CTX)
    assert caught.value.reason == reason
