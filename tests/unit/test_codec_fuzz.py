"""No payload of any shape makes any codec raise anything but DecodeError.

Random bytes, random JSON trees, random CBOR trees, and random mutations of
each codec's well-formed payloads; numbers no float holds (bignums, 10**400,
NaN, infinities) anywhere in them. Whatever a codec returns must also survive
normalization.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import cbor2
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nakhon.processors.codecs import CODECS
from nakhon.processors.codecs.base import DecodeError, TopicContext
from nakhon.processors.codecs.senml_cbor import CBOR_LABELS
from nakhon.processors.normalize import NormalizePolicy, normalize

NOW = datetime(2024, 3, 1, 1, 0, tzinfo=UTC)
CONTEXTS = [
    TopicContext("city/bangkok/aq-1/x", "bangkok", "aq-1", NOW),
    TopicContext("v3/app@ttn/devices/dev-1/up", "unknown", None, NOW),
]
KEYS = [
    "ts", "n", "v", "bn", "bt", "bu", "bv", "bs", "bver", "t", "u", "s", "vs", "vb", "vd", "ut",
    "readings", "units", "unit", "value", "lat", "lon", "speed", "heading", "pm25", "id", "type",
    "unitCode", "observedAt", "dateObserved", "end_device_ids", "device_id", "uplink_message",
    "decoded_payload", "received_at", "deviceInfo", "devEui", "time", "object", "rxInfo",
    "rx_metadata", "rssi", "snr", "sensor_id", "relativeHumidity", "location", "coordinates",
]  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["2024-03-01T01:00:00Z", "urn:ngsi-ld:AirQualityObserved:aq-1", "Cel"])
)
TREES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=25,
)
LABELS: dict[str, int] = {text: number for number, text in CBOR_LABELS.items()}
CBOR_KEYS = st.integers(min_value=-8, max_value=9) | st.sampled_from(KEYS)
CBOR_TREES = st.recursive(
    SCALARS | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(CBOR_KEYS, children, max_size=6)
    ),
    max_leaves=25,
)


def _survives(payload: bytes) -> None:
    for codec in CODECS.values():
        for ctx in CONTEXTS:
            try:
                decoded = codec.decode(payload, ctx)
            except DecodeError:
                continue
            normalize(decoded, ctx, NormalizePolicy())


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(payload: bytes) -> None:
    _survives(payload)


@FUZZ
@given(TREES)
def test_random_json_trees(tree: object) -> None:
    _survives(orjson.dumps(tree))


@FUZZ
@given(CBOR_TREES)
def test_random_cbor_trees(tree: object) -> None:
    _survives(bytes(cbor2.dumps(tree)))


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from(KEYS), TREES, max_size=6), max_size=4))
def test_random_senml_like_packs(pack: list[dict[str, object]]) -> None:
    _survives(orjson.dumps(pack))


def test_deep_nesting() -> None:
    _survives(b"[" * 5000 + b"]" * 5000)
    _survives(b"\x81" * 5000 + b"\x80")


# Numbers no float holds: bignums, 10**400, NaN and infinities, anywhere in a tree.
HOSTILE_NUMBERS = (
    st.integers(min_value=2**1024, max_value=2**4000).flatmap(lambda n: st.sampled_from([n, -n]))
    | st.sampled_from([2**64, 2**200, -(2**200), 10**308, float("nan"), float("inf")])
    | st.sampled_from([float("-inf"), 1e308, -1e308, 5e-324])
)
HOSTILE_SCALARS = SCALARS | HOSTILE_NUMBERS
HOSTILE_TREES = st.recursive(
    HOSTILE_SCALARS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(KEYS), children, max_size=6)
    ),
    max_leaves=25,
)
HOSTILE_CBOR_TREES = st.recursive(
    HOSTILE_SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(CBOR_KEYS, children, max_size=6)
    ),
    max_leaves=25,
)


@FUZZ
@given(HOSTILE_TREES)
def test_hostile_numbers_in_json_trees(tree: object) -> None:
    # The standard library writes what orjson will not: 10**400, NaN, Infinity.
    _survives(json.dumps(tree).encode())


@FUZZ
@given(HOSTILE_CBOR_TREES)
def test_hostile_numbers_in_cbor_trees(tree: object) -> None:
    _survives(bytes(cbor2.dumps(tree)))


@FUZZ
@given(
    st.lists(
        st.dictionaries(st.sampled_from(KEYS), HOSTILE_SCALARS, min_size=1, max_size=6),
        min_size=1,
        max_size=4,
    )
)
def test_hostile_numbers_in_senml_like_packs(pack: list[dict[str, object]]) -> None:
    _survives(json.dumps(pack).encode())
    _survives(bytes(cbor2.dumps(pack)))
    labelled = [{LABELS.get(k, k): v for k, v in record.items()} for record in pack]
    _survives(bytes(cbor2.dumps(labelled)))
