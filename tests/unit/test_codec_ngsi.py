"""FIWARE Smart Data Models entities, in the shapes of the smart-data-models examples."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import orjson
import pytest

from nakhon.processors.codecs import get_codec
from nakhon.processors.codecs.base import DecodeError, TopicContext
from nakhon.processors.normalize import NormalizePolicy, normalize

NOW = datetime(2024, 3, 1, 1, 0, tzinfo=UTC)
CTX = TopicContext("city/bangkok/aq-1/ngsi", "bangkok", "aq-1", NOW)
NO_SENSOR = TopicContext("ngsi/notify", "bangkok", None, NOW)
CODEC = get_codec("ngsi")
T0 = datetime(2024, 3, 1, 0, 0, tzinfo=UTC)

AIR_LD_NORMALIZED = {
    "id": "urn:ngsi-ld:AirQualityObserved:bkk-aq-1",
    "type": "AirQualityObserved",
    "dateObserved": {"type": "Property", "value": {"@type": "DateTime",
                                                   "@value": "2024-03-01T00:00:00Z"}},
    "pm25": {"type": "Property", "value": 41.2, "unitCode": "GQ"},
    "CO": {"type": "Property", "value": 1.1, "unitCode": "GP",
           "observedAt": "2024-03-01T00:30:00Z"},
    "relativeHumidity": {"type": "Property", "value": 0.54},
    "airQualityIndex": {"type": "Property", "value": 120},
    "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:aq-77"},
    "location": {"type": "GeoProperty", "value": {"type": "Point",
                                                  "coordinates": [100.502, 13.756]}},
}  # fmt: skip


def test_air_quality_ld_normalized() -> None:
    decoded = CODEC.decode(orjson.dumps(AIR_LD_NORMALIZED), CTX)
    got = [(o.name, o.value, o.unit, o.time) for o in decoded.observations]
    assert got == [
        ("pm25", 41.2, "GQ", T0),
        ("CO", 1.1, "GP", datetime(2024, 3, 1, 0, 30, tzinfo=UTC)),
        ("relativeHumidity", pytest.approx(54.0), None, T0),
    ]
    out = normalize(decoded, CTX, NormalizePolicy())
    metrics = {r.metric: r.value for r in out.readings}
    assert metrics["pm2_5"] == 41.2
    assert math.isclose(metrics["co"], 1.1 * 24.45 / 28.01)
    assert math.isclose(metrics["humidity"], 54.0)


def test_sensor_from_ref_device_then_entity_id() -> None:
    decoded = CODEC.decode(orjson.dumps(AIR_LD_NORMALIZED), NO_SENSOR)
    assert {o.sensor_id for o in decoded.observations} == {"aq-77"}
    entity = {k: v for k, v in AIR_LD_NORMALIZED.items() if k != "refDevice"}
    decoded = CODEC.decode(orjson.dumps(entity), NO_SENSOR)
    assert {o.sensor_id for o in decoded.observations} == {"bkk-aq-1"}


def test_weather_key_values_and_interval_date() -> None:
    entity = {
        "id": "urn:ngsi-ld:WeatherObserved:cm-w-1",
        "type": "WeatherObserved",
        "dateObserved": "2024-02-29T23:00:00Z/2024-03-01T00:00:00Z",
        "temperature": 31.5,
        "relativeHumidity": 0.62,
        "atmosphericPressure": 1008.2,
        "precipitation": 0,
        "windSpeed": 2.5,
        "windDirection": 186,
        "pressureTendency": "falling",
    }
    decoded = CODEC.decode(orjson.dumps(entity), CTX)
    assert {o.time for o in decoded.observations} == {T0}
    out = normalize(decoded, CTX, NormalizePolicy())
    assert {r.metric for r in out.readings} == {
        "temperature", "humidity", "pressure", "rainfall", "wind_speed", "wind_direction",
    }  # fmt: skip
    assert out.rejections == []


def test_percent_unit_code_is_not_scaled() -> None:
    humidity = {"type": "Property", "value": 39.0, "unitCode": "P1"}
    entity = {"id": "x", "type": "WeatherObserved", "relativeHumidity": humidity}
    (obs,) = CODEC.decode(orjson.dumps(entity), CTX).observations
    assert (obs.value, obs.unit) == (39.0, "P1")


def test_noise_traffic_parking_flood_and_v2() -> None:
    entities = [
        {"id": "n", "type": "NoiseLevelObserved", "LAeq": {"type": "Property", "value": 67.8},
         "dateObservedTo": {"type": "Property", "value": {"@type": "DateTime",
                                                          "@value": "2024-03-01T00:00:00Z"}}},
        {"id": "t", "type": "TrafficFlowObserved", "intensity": 197, "occupancy": 0.76,
         "averageVehicleSpeed": 52.6, "laneId": 1},
        {"id": "p", "type": "ParkingSpot", "status": "occupied"},
        {"id": "f", "type": "FloodMonitoring", "currentLevel": 0.98,
         "observationDateTime": "2024-03-01T07:00:00+07:00"},
        {"id": "v2", "type": "AirQualityObserved",
         "no2": {"type": "Number", "value": 40, "metadata": {"unitCode": {"value": "61"}}}},
    ]  # fmt: skip
    decoded = CODEC.decode(orjson.dumps({"subscriptionId": "s", "data": entities}), CTX)
    out = normalize(decoded, CTX, NormalizePolicy())
    assert [(r.metric, round(r.value, 6)) for r in out.readings] == [
        ("noise_laeq", 67.8),
        ("vehicle_count", 197.0),
        ("occupancy", 76.0),
        ("vehicle_speed", 52.6),
        ("parking_free", 0.0),
        ("water_level", 0.98),
        ("no2", 40.0),
    ]


def test_non_numeric_known_attribute_rejected() -> None:
    entity = {"id": "x", "type": "AirQualityObserved", "pm25": "high", "pm10": 20}
    decoded = CODEC.decode(orjson.dumps(entity), CTX)
    assert [o.name for o in decoded.observations] == ["pm10"]
    assert [r.reason for r in decoded.rejections] == ["non_numeric_value"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"nope", "malformed_json"),
        (b'{"id": "x"}', "malformed_entity"),
        (b"[1]", "malformed_entity"),
        (b'{"type": "WeatherObserved", "dateObserved": "soon", "temperature": 1}',
         "invalid_time"),
    ],
)  # fmt: skip
def test_entity_errors(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(payload, CTX)
    assert caught.value.reason == reason
