"""Which codec decodes a payload, chosen by its MQTT topic (configuration, not code).

A route is a topic pattern and a codec name. Pattern levels are literals or
placeholders in braces matching exactly one level: ``{city}`` and
``{sensor_id}`` are captured into the :class:`TopicContext`; any other name
(``{app}``) matches a level and is ignored. Routes without ``{city}`` (the
LoRaWAN network servers' topics) take the route's fixed ``city``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from nakhon.processors.codecs import get_codec
from nakhon.processors.codecs.base import Codec, TopicContext

_ID = re.compile(r"[a-z0-9_-]{1,64}")


class RouteError(ValueError):
    """A topic no route accepts: ``reason`` is ``no_route`` or ``invalid_topic``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Route:
    levels: tuple[str, ...]
    codec: Codec
    city: str | None

    @classmethod
    def parse(cls, spec: str, default_city: str) -> Route:
        """``pattern=codec``; raises ValueError on a bad spec or an unknown codec."""
        pattern, sep, codec_name = spec.partition("=")
        if not sep or not pattern or not codec_name:
            raise ValueError(f"route {spec!r} is not 'pattern=codec'")
        levels = tuple(pattern.strip().split("/"))
        codec = get_codec(codec_name.strip())
        return cls(levels, codec, None if "{city}" in levels else default_city)

    def match(self, topic_levels: Sequence[str]) -> dict[str, str] | None:
        if len(topic_levels) != len(self.levels):
            return None
        captured: dict[str, str] = {}
        for want, got in zip(self.levels, topic_levels, strict=True):
            if want.startswith("{") and want.endswith("}"):
                captured[want[1:-1]] = got
            elif want != got:
                return None
        return captured


class Router:
    """Finds the route of a topic and builds its :class:`TopicContext`."""

    def __init__(self, specs: Sequence[str], default_city: str) -> None:
        self.routes = [Route.parse(spec, default_city) for spec in specs]

    def route(self, topic: str, received_at: datetime) -> tuple[Codec, TopicContext]:
        levels = topic.split("/")
        for route in self.routes:
            captured = route.match(levels)
            if captured is None:
                continue
            city = route.city if route.city is not None else captured["city"].lower()
            if not _ID.fullmatch(city):
                raise RouteError("invalid_topic", f"city {city[:80]!r} in topic {topic[:200]!r}")
            sensor = captured.get("sensor_id")
            ctx = TopicContext(
                mqtt_topic=topic,
                city=city,
                sensor_id=sensor.lower() if sensor is not None else None,
                received_at=received_at,
                city_from_topic=route.city is None,
            )
            return route.codec, ctx
        raise RouteError("no_route", f"no route for topic {topic[:200]!r}")
