"""SenML JSON and CBOR (RFC 8428): golden packs in the RFC's §5 shapes, our values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cbor2
import orjson
import pytest

from nakhon.processors.codecs import get_codec
from nakhon.processors.codecs.base import DecodeError, TopicContext
from nakhon.processors.codecs.senml_cbor import CBOR_LABELS
from nakhon.processors.normalize import NormalizePolicy, normalize

NOW = datetime(2024, 3, 1, 1, 0, tzinfo=UTC)
TOPIC = TopicContext("city/chiangmai/aq-7/senml", "chiangmai", "aq-7", NOW)
NO_SENSOR = TopicContext("senml/gw-1", "chiangmai", None, NOW)
LABELS = {text: number for number, text in CBOR_LABELS.items()}

# RFC 8428 §5.1.3 shape: base name, base time, base unit, relative t.
PACK: list[dict[str, object]] = [
    {"bn": "urn:dev:mac:0024befffe804ff1:", "bt": 1709254800, "bu": "Cel", "bver": 10,
     "n": "temperature", "v": 31.5},
    {"n": "temperature", "t": 60, "v": 31.7},
    {"n": "pm25", "u": "ug/m3", "t": 60, "v": 41.2},
    {"n": "humidity", "u": "%RH", "v": 62},
]  # fmt: skip


def _cbor(pack: list[dict[str, object]]) -> bytes:
    return bytes(cbor2.dumps([{LABELS[k]: v for k, v in record.items()} for record in pack]))


@pytest.mark.parametrize(
    ("codec", "payload"),
    [("senml", orjson.dumps(PACK)), ("senml-cbor", _cbor(PACK))],
)
def test_pack_resolves_identically_in_json_and_cbor(codec: str, payload: bytes) -> None:
    decoded = get_codec(codec).decode(payload, TOPIC)
    assert decoded.rejections == []
    t0 = datetime(2024, 3, 1, 1, 0, tzinfo=UTC)
    assert [(o.sensor_id, o.name, o.value, o.unit, o.time) for o in decoded.observations] == [
        ("aq-7", "temperature", 31.5, "Cel", t0),
        ("aq-7", "temperature", 31.7, "Cel", t0 + timedelta(seconds=60)),
        ("aq-7", "pm25", 41.2, "ug/m3", t0 + timedelta(seconds=60)),
        ("aq-7", "humidity", 62.0, "%RH", t0),
    ]
    out = normalize(decoded, TOPIC, NormalizePolicy())
    assert [r.metric for r in out.readings] == ["temperature", "temperature", "pm2_5", "humidity"]


def test_sensor_from_base_name_when_topic_has_none() -> None:
    decoded = get_codec("senml").decode(orjson.dumps(PACK), NO_SENSOR)
    assert {o.sensor_id for o in decoded.observations} == {"0024befffe804ff1"}


def test_relative_time_and_base_value() -> None:
    pack = [{"bn": "x/", "bv": 10, "n": "pm25", "v": 2, "t": -30}, {"n": "pm10", "v": 5}]
    decoded = get_codec("senml").decode(orjson.dumps(pack), TOPIC)
    assert [(o.value, o.time) for o in decoded.observations] == [
        (12.0, NOW - timedelta(seconds=30)),
        (15.0, NOW),
    ]


def test_sum_used_when_no_value() -> None:
    pack = [{"bs": 100, "n": "rainfall", "u": "mm", "s": 2.5}]
    (obs,) = get_codec("senml").decode(orjson.dumps(pack), TOPIC).observations
    assert obs.value == 102.5


def test_name_only_base_takes_metric_from_unit() -> None:
    # RFC 8428 §5.1.1 shape: the name is the device, the unit says what it measures.
    pack = [{"bn": "urn:dev:ow:10e2073a01080063", "u": "Cel", "v": 23.1}]
    (obs,) = get_codec("senml").decode(orjson.dumps(pack), NO_SENSOR).observations
    assert (obs.sensor_id, obs.name) == ("10e2073a01080063", "temperature")


def test_non_numeric_records_rejected_others_kept() -> None:
    pack = [
        {"bn": "d:", "n": "status", "vs": "ok"},
        {"n": "door", "vb": True},
        {"n": "blob", "vd": "aGk"},
        {"n": "pm25", "v": 9},
        {"n": "pm10", "v": "9"},
        {"n": "nothing"},
        {"bt": 1709254800},
    ]
    decoded = get_codec("senml").decode(orjson.dumps(pack), TOPIC)
    assert [o.name for o in decoded.observations] == ["pm25"]
    assert [r.reason for r in decoded.rejections] == [
        "non_numeric_value",
        "non_numeric_value",
        "non_numeric_value",
        "malformed_record",
        "missing_value",
    ]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b'{"n": "x"}', "malformed_senml"),
        (b"[1, 2]", "malformed_senml"),
        (b'[{"bver": 11, "n": "x", "v": 1}]', "unsupported_senml_version"),
        (b'[{"n": "x", "v": 1, "foo_": 1}]', "unsupported_senml_field"),
        (b'[{"bn": 5, "n": "x", "v": 1}]', "malformed_senml"),
        (b'[{"bt": "soon", "n": "x", "v": 1}]', "malformed_senml"),
    ],
)
def test_pack_errors(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        get_codec("senml").decode(payload, TOPIC)
    assert caught.value.reason == reason


def test_cbor_errors() -> None:
    codec = get_codec("senml-cbor")
    with pytest.raises(DecodeError) as caught:
        codec.decode(b"\xff\xff", TOPIC)
    assert caught.value.reason == "malformed_cbor"
    with pytest.raises(DecodeError):
        codec.decode(bytes(cbor2.dumps({0: "x"})), TOPIC)


def test_absurd_times_are_per_record() -> None:
    pack = [{"n": "pm25", "v": 1, "t": 1e300}, {"n": "pm10", "v": 1, "t": -1e300}]
    decoded = get_codec("senml").decode(orjson.dumps(pack), TOPIC)
    assert [r.reason for r in decoded.rejections] == ["invalid_time", "invalid_time"]
