"""Enrichment from the registry: registered cities, LoRaWAN cities, strict mode."""

from __future__ import annotations

from datetime import UTC, datetime

from nakhon.config import DEFAULT_ROUTES
from nakhon.domain.records import Position, RawRecord, Reading
from nakhon.processors.codecs.base import TopicContext
from nakhon.processors.enrich import REASONS, SensorDirectory, enrich
from nakhon.processors.normalize import Normalized, NormalizePolicy
from nakhon.processors.pipeline import Pipeline
from nakhon.processors.routing import Router

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
LORAWAN = TopicContext("v3/app/devices/dev-1/up", "lorawan", None, NOW, city_from_topic=False)
CITY_TOPIC = TopicContext("city/phuket/dev-1/json", "phuket", "dev-1", NOW)
CITIES = ("phuket", "khon_kaen", "lorawan")


def batch(city: str) -> Normalized:
    return Normalized(
        readings=[
            Reading(NOW, "dev-1", "pm2_5", 12.0, city),
            Reading(NOW, "stranger", "pm2_5", 13.0, city),
        ],
        positions=[Position(NOW, "dev-1", 13.7, 100.5, 20.0, 90.0, city)],
    )


def reasons(out: Normalized) -> list[tuple[str, str | None, str]]:
    return [(j.reason, j.sensor_id, j.stage.value) for j in out.rejections]


def test_lorawan_readings_take_the_registry_city() -> None:
    out = batch("lorawan")
    enrich(out, LORAWAN, SensorDirectory({"dev-1": "khon_kaen"}, CITIES), strict=False)
    assert [(r.sensor_id, r.city) for r in out.readings] == [
        ("dev-1", "khon_kaen"),
        ("stranger", "lorawan"),  # not in the registry: the route's fallback city
    ]
    assert out.positions[0].city == "khon_kaen"
    assert out.rejections == []


def test_a_topic_city_is_not_overridden() -> None:
    out = batch("phuket")
    enrich(out, CITY_TOPIC, SensorDirectory({"dev-1": "phuket"}, CITIES), strict=False)
    assert {r.city for r in out.readings} == {"phuket"}
    assert [(r.sensor_id, r.city) for r in out.readings] == [
        ("dev-1", "phuket"),
        ("stranger", "phuket"),  # unknown sensors of a registered city are fine
    ]
    assert out.rejections == []


def test_strict_mode_rejects_unknown_sensors_and_keeps_known_ones() -> None:
    out = batch("phuket")
    enrich(out, CITY_TOPIC, SensorDirectory({"dev-1": "phuket"}, CITIES), strict=True)
    assert [r.sensor_id for r in out.readings] == ["dev-1"]
    assert reasons(out) == [("unknown_sensor", "stranger", "enrich")]


def test_a_topic_naming_an_unregistered_city_is_rejected_whole() -> None:
    out = batch("pattaya")
    ctx = TopicContext("city/pattaya/dev-1/json", "pattaya", "dev-1", NOW)
    enrich(out, ctx, SensorDirectory({}, CITIES), strict=False)
    assert out.readings == [] and out.positions == []
    assert reasons(out) == [
        ("unknown_city", "dev-1", "enrich"),
        ("unknown_city", "stranger", "enrich"),
    ]
    assert out.rejections[0].detail == (
        "city 'pattaya' of the topic is not registered (nakhon cities add)"
    )


def test_a_sensor_registered_in_another_city_is_a_city_mismatch() -> None:
    out = batch("phuket")
    enrich(out, CITY_TOPIC, SensorDirectory({"dev-1": "khon_kaen"}, CITIES), strict=False)
    assert [(r.sensor_id, r.city) for r in out.readings] == [("stranger", "phuket")]
    assert out.positions == []  # dev-1's position goes with its readings
    assert reasons(out) == [("city_mismatch", "dev-1", "enrich")]
    detail = out.rejections[0].detail
    assert "'khon_kaen'" in detail and "'phuket'" in detail
    assert detail == (
        "sensor 'dev-1' is registered in city 'khon_kaen' but published under city 'phuket'"
    )


def test_city_mismatch_holds_in_strict_mode_too() -> None:
    out = batch("phuket")
    directory = SensorDirectory({"dev-1": "khon_kaen", "stranger": "phuket"}, CITIES)
    enrich(out, CITY_TOPIC, directory, strict=True)
    assert [r.sensor_id for r in out.readings] == ["stranger"]
    assert reasons(out) == [("city_mismatch", "dev-1", "enrich")]


def test_an_unregistered_lorawan_device_falls_back_to_a_registered_lorawan_city() -> None:
    ctx = TopicContext("v3/app/devices/x/up", "khon_kaen", None, NOW, city_from_topic=False)
    out = batch("khon_kaen")
    enrich(out, ctx, SensorDirectory({}, ("khon_kaen",)), strict=False)
    assert {(r.sensor_id, r.city) for r in out.readings} == {
        ("dev-1", "khon_kaen"),
        ("stranger", "khon_kaen"),
    }
    assert out.rejections == []


def test_an_unregistered_lorawan_city_rejects_devices_missing_from_the_registry() -> None:
    out = batch("lorawan")
    directory = SensorDirectory({"dev-1": "khon_kaen"}, ("khon_kaen",))  # "lorawan" is not
    enrich(out, LORAWAN, directory, strict=False)
    assert [(r.sensor_id, r.city) for r in out.readings] == [("dev-1", "khon_kaen")]
    assert out.positions[0].city == "khon_kaen"
    assert reasons(out) == [("unknown_city", "stranger", "enrich")]
    assert "NAKHON_PROCESSOR_LORAWAN_CITY" in out.rejections[0].detail
    assert "'lorawan'" in out.rejections[0].detail


def test_a_lorawan_device_registered_in_an_unregistered_city_is_rejected() -> None:
    out = batch("lorawan")
    directory = SensorDirectory({"dev-1": "atlantis", "stranger": "khon_kaen"}, CITIES)
    enrich(out, LORAWAN, directory, strict=False)
    assert [(r.sensor_id, r.city) for r in out.readings] == [("stranger", "khon_kaen")]
    assert out.positions == []
    assert reasons(out) == [("unknown_city", "dev-1", "enrich")]
    assert "'atlantis'" in out.rejections[0].detail


def test_an_empty_directory_registers_no_city() -> None:
    out = batch("phuket")
    enrich(out, CITY_TOPIC, SensorDirectory(), strict=False)
    assert out.readings == [] and out.positions == []
    assert {j.reason for j in out.rejections} == {"unknown_city"}


def test_the_directory_swaps_sensors_and_cities_at_once() -> None:
    directory = SensorDirectory({"a": "phuket"}, ["phuket"])
    directory.replace({"b": "rayong"}, ["rayong"])
    assert (directory.city_of("a"), directory.city_of("b")) == (None, "rayong")
    assert directory.is_registered_city("rayong") and not directory.is_registered_city("phuket")
    assert (len(directory), directory.city_count) == (1, 1)


def test_the_pipeline_dead_letters_a_whole_payload_of_an_unknown_city() -> None:
    pipeline = Pipeline(
        Router(DEFAULT_ROUTES, "unknown"), NormalizePolicy(), SensorDirectory({}, ["bangkok"])
    )
    payload = b'[{"n": "pm25", "u": "ug/m3", "v": 12.5}]'
    stored = pipeline.process(RawRecord("city/Bangkok/aq-1/senml", payload, NOW))
    assert (len(stored.readings), stored.rejections) == (1, ())
    assert stored.readings[0].city == "bangkok"
    refused = pipeline.process(RawRecord("city/bangkock/aq-1/senml", payload, NOW))
    assert refused.readings == () and refused.whole_rejection
    assert [(j.reason, j.stage.value) for j in refused.rejections] == [("unknown_city", "enrich")]
    assert {j.reason for j in refused.rejections} <= REASONS


def test_the_directory_remembers_what_it_did_not_know_until_asked() -> None:
    directory = SensorDirectory({"aq-1": "khon_kaen"}, ["khon_kaen"])
    assert directory.city_of("aq-1") == "khon_kaen"
    assert directory.city_of("aq-2") is None
    assert not directory.is_registered_city("udon_thani")
    assert directory.take_misses() == ({"aq-2"}, {"udon_thani"})
    assert directory.take_misses() == (set(), set())
    directory.merge({"aq-2": "udon_thani"}, ["udon_thani"])
    assert directory.city_of("aq-2") == "udon_thani"
    assert directory.is_registered_city("udon_thani")
    assert directory.is_registered_city("khon_kaen")
    assert directory.take_misses() == (set(), set())
