"""Enrichment from the sensor registry: the city of LoRaWAN devices, strict mode.

The registry is the ``sensors`` table. The processor keeps a snapshot of it
(:class:`SensorDirectory`, refreshed in the background) so enrichment costs a
dict lookup per reading, not a query. Two rules:

- a reading whose route names no city (The Things Stack, ChirpStack topics)
  takes the city the registry gives its sensor; the route's fixed city otherwise;
- in strict mode, readings of sensors the registry does not know are rejected
  with ``unknown_sensor`` (and nothing is registered automatically).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from nakhon.processors.codecs.base import TopicContext
from nakhon.processors.normalize import Normalized
from nakhon.records import Rejection, Stage


class SensorDirectory:
    """sensor id -> city, as of the last refresh."""

    def __init__(self, cities: Mapping[str, str] | None = None) -> None:
        self._cities: dict[str, str] = dict(cities or {})

    def replace(self, cities: Mapping[str, str]) -> None:
        self._cities = dict(cities)

    def city_of(self, sensor_id: str) -> str | None:
        return self._cities.get(sensor_id)

    def __len__(self) -> int:
        return len(self._cities)


def enrich(
    normalized: Normalized, ctx: TopicContext, directory: SensorDirectory, *, strict: bool
) -> None:
    """Apply the registry to ``normalized`` in place."""
    if strict:
        _reject_unknown(normalized, directory)
    if ctx.city_from_topic:
        return
    normalized.readings = [
        r if (city := directory.city_of(r.sensor_id)) is None else dataclasses.replace(r, city=city)
        for r in normalized.readings
    ]
    normalized.positions = [
        p
        if (city := directory.city_of(p.vehicle_id)) is None
        else dataclasses.replace(p, city=city)
        for p in normalized.positions
    ]


def _reject_unknown(normalized: Normalized, directory: SensorDirectory) -> None:
    unknown = {r.sensor_id for r in normalized.readings if directory.city_of(r.sensor_id) is None}
    unknown |= {
        p.vehicle_id for p in normalized.positions if directory.city_of(p.vehicle_id) is None
    }
    for sensor_id in sorted(unknown):
        normalized.rejections.append(
            Rejection(
                "unknown_sensor",
                f"sensor {sensor_id!r} is not in the registry (strict mode)",
                Stage.ENRICH,
                sensor_id=sensor_id,
            )
        )
    if unknown:
        normalized.readings = [r for r in normalized.readings if r.sensor_id not in unknown]
        normalized.positions = [p for p in normalized.positions if p.vehicle_id not in unknown]
