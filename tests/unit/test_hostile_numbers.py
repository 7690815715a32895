"""Numbers no float can hold (CBOR bignums, 10**400, 1e400, NaN, infinities) are rejections.

Each is refused with a reason (a DecodeError for the payload, or a per-value
rejection), never another exception, which the pipeline's catch-all
(``codec_error``) would log with a traceback per payload. The payloads here are
recipes an end-to-end test can publish as they are (topic, bytes).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import cbor2
import pytest
from _pytest.mark import ParameterSet

from nakhon.config import DEFAULT_ROUTES
from nakhon.processors.codecs.base import DecodeError
from nakhon.processors.codecs.fields import InvalidTime, as_number, parse_time
from nakhon.processors.normalize import NormalizePolicy, normalize
from nakhon.processors.routing import Router

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
BIG = str(10**400).encode()  # a JSON integer no float can hold
BIGNUM = 2**1100  # CBOR tag 2: a bignum past float's range

SENML_CBOR = "city/rayong/aq-1/senml-cbor"
SENML = "city/rayong/aq-1/senml"
JSON = "city/rayong/aq-1/json"
NGSI = "city/rayong/aq-1/ngsi"
POSITION = "city/rayong/bus-1/position"
TTS = "v3/app@ttn/devices/dev-1/up"
CHIRPSTACK = "application/app-1/device/0004a30b001c0530/event/up"


def cbor(pack: list[dict[int, object]]) -> bytes:
    return bytes(cbor2.dumps(pack))


def tts(decoded_payload: bytes, rssi: bytes = b"-80") -> bytes:
    return (
        b'{"end_device_ids": {"device_id": "dev-1"}, "uplink_message": {"f_port": 1,'
        b' "decoded_payload": ' + decoded_payload + b', "rx_metadata": [{"rssi": ' + rssi + b"}]}}"
    )


def chirpstack(obj: bytes, rssi: bytes = b"-80") -> bytes:
    return (
        b'{"deviceInfo": {"devEui": "0004A30B001C0530"}, "fPort": 1, "object": '
        + obj
        + b', "rxInfo": [{"rssi": '
        + rssi
        + b"}]}"
    )


def case(name: str, topic: str, payload: bytes, reason: str) -> ParameterSet:
    return pytest.param(topic, payload, reason, id=name)


# The poison: MQTT topic, payload, the reason it is refused with.
POISON = [
    # SenML CBOR: n=0, v=2, t=6, bt=-3, bv=-5 (RFC 8428 Table 4)
    case("cbor-v-bignum", SENML_CBOR, cbor([{0: "pm25", 2: BIGNUM}]), "not_finite"),
    case("cbor-v-neg-bignum", SENML_CBOR, cbor([{0: "pm25", 2: -BIGNUM}]), "not_finite"),
    case("cbor-v-2**200", SENML_CBOR, cbor([{0: "pm25", 2: 2**200}]), "out_of_range"),
    case("cbor-t-bignum", SENML_CBOR, cbor([{0: "pm25", 2: 12, 6: BIGNUM}]), "invalid_time"),
    case("cbor-t-2**200", SENML_CBOR, cbor([{0: "pm25", 2: 12, 6: 2**200}]), "invalid_time"),
    case("cbor-bt-bignum", SENML_CBOR, cbor([{-3: BIGNUM, 0: "pm25", 2: 12}]), "malformed_senml"),
    case("cbor-bv-bignum", SENML_CBOR, cbor([{-5: BIGNUM, 0: "pm25", 2: 12}]), "malformed_senml"),
    case("cbor-v-nan", SENML_CBOR, cbor([{0: "pm25", 2: math.nan}]), "not_finite"),
    case("cbor-v-neg-inf", SENML_CBOR, cbor([{0: "pm25", 2: -math.inf}]), "not_finite"),
    case("cbor-t-inf", SENML_CBOR, cbor([{0: "pm25", 2: 12, 6: math.inf}]), "invalid_time"),
    case(
        "cbor-v-decimal-fraction-huge-exponent",
        SENML_CBOR,
        cbor([{0: "pm25", 2: cbor2.CBORTag(4, [2**70, 1])}]),
        "malformed_cbor",
    ),
    # SenML JSON
    case("senml-v-400-digits", SENML, b'[{"n": "pm25", "v": ' + BIG + b"}]", "malformed_json"),
    case("senml-v-1e400", SENML, b'[{"n": "pm25", "v": 1e400}]', "malformed_json"),
    case("senml-v-nan", SENML, b'[{"n": "pm25", "v": NaN}]', "malformed_json"),
    case(
        "senml-t-400-digits",
        SENML,
        b'[{"n": "pm25", "v": 12, "t": ' + BIG + b"}]",
        "malformed_json",
    ),
    case(
        "senml-bt-plus-t-overflows",
        SENML,
        b'[{"bt": 1e308, "n": "pm25", "v": 12, "t": 1e308}]',
        "invalid_time",
    ),
    case(
        "senml-bv-plus-v-overflows",
        SENML,
        b'[{"bv": 1e308, "n": "pm25", "v": 1e308}]',
        "not_finite",
    ),
    # simple JSON
    case("json-400-digits", JSON, b'{"pm25": ' + BIG + b"}", "malformed_json"),
    case("json-1e400", JSON, b'{"pm25": 1e400}', "malformed_json"),
    case("json-infinity", JSON, b'{"pm25": Infinity}', "malformed_json"),
    case("json-ts-1e308", JSON, b'{"ts": 1e308, "pm25": 12}', "invalid_time"),
    case("json-ts-neg-1e308", JSON, b'{"ts": -1e308, "pm25": 12}', "invalid_time"),
    case("json-1e308", JSON, b'{"pm25": 1e308}', "out_of_range"),
    # NGSI: relativeHumidity is a fraction, scaled x100 past float's range
    case(
        "ngsi-ratio-overflows",
        NGSI,
        b'{"id": "urn:ngsi-ld:AirQualityObserved:aq-1", "type": "AirQualityObserved",'
        b' "relativeHumidity": 1e308}',
        "not_finite",
    ),
    case(
        "ngsi-400-digits",
        NGSI,
        b'{"id": "aq-1", "type": "AirQualityObserved", "pm25": ' + BIG + b"}",
        "malformed_json",
    ),
    # position
    case("position-400-digits", POSITION, b'{"lat": ' + BIG + b', "lon": 100.5}', "malformed_json"),
    case(
        "position-1e308",
        POSITION,
        b'{"lat": 1e308, "lon": 100.5, "speed": 1e308}',
        "out_of_range",
    ),
    # LoRaWAN: pydantic's JSON parser keeps huge integers and reads NaN/Infinity
    case("tts-rssi-400-digits", TTS, tts(b'{"pm25": 12}', BIG), "not_finite"),
    case(
        "tts-400-digits",
        TTS,
        tts(b'{"pm25": ' + BIG + b', "pm10": -' + BIG + b"}"),
        "not_finite",
    ),
    case(
        "tts-nan-infinity", TTS, tts(b'{"pm25": Infinity, "pm10": NaN}', b"-Infinity"), "not_finite"
    ),
    case("chirpstack-400-digits", CHIRPSTACK, chirpstack(b'{"pm25": ' + BIG + b"}"), "not_finite"),
    case(
        "chirpstack-nan-infinity",
        CHIRPSTACK,
        chirpstack(b'{"pm25": NaN}', b"Infinity"),
        "not_finite",
    ),
]


ROUTER = Router(DEFAULT_ROUTES, "unknown")


@pytest.mark.parametrize(("topic", "payload", "reason"), POISON)
def test_a_number_no_float_holds_is_a_rejection_not_an_error(
    topic: str, payload: bytes, reason: str
) -> None:
    codec, ctx = ROUTER.route(topic, NOW)
    try:
        decoded = codec.decode(payload, ctx)
    except DecodeError as exc:
        got = {exc.reason}
    else:
        normalized = normalize(decoded, ctx, NormalizePolicy())
        got = {r.reason for r in normalized.rejections}
        assert all(math.isfinite(r.value) for r in normalized.readings)
    assert got == {reason}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (BIGNUM, float("inf")),
        (-BIGNUM, float("-inf")),
        (10**400, float("inf")),
        (2**200, float(2**200)),
        (True, None),
    ],
)
def test_as_number_never_raises(value: object, expected: float | None) -> None:
    assert as_number(value) == expected


def test_a_signalling_nan_decimal_is_a_nan_not_an_error() -> None:
    number = as_number(Decimal("sNaN"))
    assert number is not None and number != number


@pytest.mark.parametrize("value", [BIGNUM, -BIGNUM, 10**400, float("inf"), float("nan")])
def test_an_epoch_past_any_date_is_an_invalid_time(value: object) -> None:
    with pytest.raises(InvalidTime):
        parse_time(value)
