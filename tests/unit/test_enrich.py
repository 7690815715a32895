"""Enrichment from the sensor registry: LoRaWAN cities and strict mode."""

from __future__ import annotations

from datetime import UTC, datetime

from nakhon.processors.codecs.base import TopicContext
from nakhon.processors.enrich import SensorDirectory, enrich
from nakhon.processors.normalize import Normalized
from nakhon.records import Position, Reading

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
LORAWAN = TopicContext("v3/app/devices/dev-1/up", "lorawan", None, NOW, city_from_topic=False)
CITY_TOPIC = TopicContext("city/phuket/dev-1/json", "phuket", "dev-1", NOW)


def batch(city: str) -> Normalized:
    return Normalized(
        readings=[
            Reading(NOW, "dev-1", "pm2_5", 12.0, city),
            Reading(NOW, "stranger", "pm2_5", 13.0, city),
        ],
        positions=[Position(NOW, "dev-1", 13.7, 100.5, 20.0, 90.0, city)],
    )


def test_lorawan_readings_take_the_registry_city() -> None:
    out = batch("lorawan")
    enrich(out, LORAWAN, SensorDirectory({"dev-1": "khon_kaen"}), strict=False)
    assert [(r.sensor_id, r.city) for r in out.readings] == [
        ("dev-1", "khon_kaen"),
        ("stranger", "lorawan"),
    ]
    assert out.positions[0].city == "khon_kaen"
    assert out.rejections == []


def test_a_topic_city_is_not_overridden() -> None:
    out = batch("phuket")
    enrich(out, CITY_TOPIC, SensorDirectory({"dev-1": "khon_kaen"}), strict=False)
    assert {r.city for r in out.readings} == {"phuket"}


def test_strict_mode_rejects_unknown_sensors_and_keeps_known_ones() -> None:
    out = batch("phuket")
    enrich(out, CITY_TOPIC, SensorDirectory({"dev-1": "phuket"}), strict=True)
    assert [r.sensor_id for r in out.readings] == ["dev-1"]
    assert [(j.reason, j.sensor_id, j.stage.value) for j in out.rejections] == [
        ("unknown_sensor", "stranger", "enrich")
    ]
