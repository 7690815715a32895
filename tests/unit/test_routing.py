"""Routes pick a payload's codec by its MQTT topic, as docs/architecture.md documents."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nakhon.config import DEFAULT_ROUTES
from nakhon.processors.routing import RouteError, Router

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
ROUTER = Router(DEFAULT_ROUTES, "khon_kaen")


@pytest.mark.parametrize(
    ("topic", "codec", "city", "sensor"),
    [
        ("city/chiang_mai/aq-17/senml", "senml", "chiang_mai", "aq-17"),
        ("city/chiang_mai/aq-17/senml-cbor", "senml-cbor", "chiang_mai", "aq-17"),
        ("city/Phuket/Noise-3/json", "json", "phuket", "noise-3"),  # lower-cased
        ("city/rayong/tf-1/ngsi", "ngsi", "rayong", "tf-1"),
        ("city/lampang/bus-12/position", "position", "lampang", "bus-12"),
    ],
)
def test_a_city_topic_is_routed_by_its_format_suffix(
    topic: str, codec: str, city: str, sensor: str
) -> None:
    found, ctx = ROUTER.route(topic, NOW)
    assert (found.name, ctx.city, ctx.sensor_id, ctx.city_from_topic) == (codec, city, sensor, True)
    assert (ctx.mqtt_topic, ctx.received_at) == (topic, NOW)


@pytest.mark.parametrize(
    ("topic", "codec", "sensor"),
    [
        ("v3/air@kku/devices/eui-70b3/up", "tts-v3", "eui-70b3"),
        ("application/42/device/0004a30b001c1234/event/up", "chirpstack-v4", "0004a30b001c1234"),
    ],
)
def test_a_lorawan_topic_takes_the_routes_fixed_city(topic: str, codec: str, sensor: str) -> None:
    found, ctx = ROUTER.route(topic, NOW)
    assert (found.name, ctx.city, ctx.sensor_id) == (codec, "khon_kaen", sensor)
    assert not ctx.city_from_topic  # the sensor registry's city wins in enrichment


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("city/rayong/aq-1/xml", "no_route"),
        ("city/rayong/aq-1", "no_route"),
        ("city/rayong/aq-1/json/extra", "no_route"),
        ("city/ra yong/aq-1/json", "invalid_topic"),
        ("city/" + "r" * 65 + "/aq-1/json", "invalid_topic"),
    ],
)
def test_a_topic_no_route_accepts_is_refused_with_a_reason(topic: str, reason: str) -> None:
    with pytest.raises(RouteError) as refused:
        ROUTER.route(topic, NOW)
    assert refused.value.reason == reason


def test_the_first_matching_route_wins() -> None:
    router = Router(["city/{city}/{sensor_id}/json=json", "city/{city}/{id}/{fmt}=senml"], "x")
    assert router.route("city/rayong/aq-1/json", NOW)[0].name == "json"
    assert router.route("city/rayong/aq-1/anything", NOW)[0].name == "senml"


@pytest.mark.parametrize("spec", ["city/{city}/{sensor_id}/json", "=json", "a/b=", "a/b=no-codec"])
def test_a_bad_route_spec_is_refused(spec: str) -> None:
    with pytest.raises((KeyError, ValueError)):
        Router([spec], "x")
