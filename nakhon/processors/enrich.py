"""Enrichment from the registry: each reading's city, checked; strict mode.

The registry is the ``sensors`` and ``cities`` tables. The processor keeps a
snapshot of both (:class:`SensorDirectory`, refreshed in the background) so
enrichment costs a dict lookup per sensor, not a query. The rules, per sensor
of a payload:

- in strict mode, readings of sensors the registry does not know are rejected
  with ``unknown_sensor`` (and nothing is registered automatically);
- a route that takes the city from the topic (``city/<city>/...``): the city
  must be registered, else ``unknown_city``; and a sensor the registry places
  in another city is rejected with ``city_mismatch`` (the broker lets a
  device publish only under its own city; this double-checks it);
- a route that names no city (The Things Stack, ChirpStack topics): the
  sensor takes the city the registry gives it, else the route's fixed city
  (``NAKHON_PROCESSOR_LORAWAN_CITY``); either must be registered, else
  ``unknown_city``.

Cities are registered, never invented (docs/architecture.md): a reading is stored only
under a city of the ``cities`` table, so the writer's auto-registration of new
sensors cannot put a sensor in an unregistered city either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from nakhon.domain.records import Rejection, Stage
from nakhon.processors.codecs.base import TopicContext
from nakhon.processors.normalize import Normalized

#: Reason codes this step gives (stage ``enrich``).
REASONS = frozenset({"unknown_sensor", "unknown_city", "city_mismatch"})

_ADD_CITY = "nakhon cities add"


class SensorDirectory:
    """The registry as of the last refresh: sensor id -> city, and the registered cities.

    It remembers the sensors and cities it was asked about and did not know
    (:meth:`take_misses`), so the processor can look just those up before it
    believes them unregistered: a device registered a second ago is known at
    once, not at the next full refresh.
    """

    def __init__(
        self, sensors: Mapping[str, str] | None = None, cities: Iterable[str] = ()
    ) -> None:
        self._sensors: dict[str, str] = dict(sensors or {})
        self._cities: frozenset[str] = frozenset(cities)
        self._missed_sensors: set[str] = set()
        self._missed_cities: set[str] = set()

    def replace(self, sensors: Mapping[str, str], cities: Iterable[str]) -> None:
        """Swap in a new snapshot (both at once: enrichment never sees half of one)."""
        self._sensors, self._cities = dict(sensors), frozenset(cities)

    def merge(self, sensors: Mapping[str, str], cities: Iterable[str]) -> None:
        """Add what a look-up of missed names found."""
        self._sensors.update(sensors)
        self._cities = self._cities | frozenset(cities)

    def take_misses(self) -> tuple[set[str], set[str]]:
        """The sensors and cities asked about and unknown since the last call."""
        misses = (self._missed_sensors, self._missed_cities)
        self._missed_sensors, self._missed_cities = set(), set()
        return misses

    def city_of(self, sensor_id: str) -> str | None:
        """The city the registry gives ``sensor_id``, or None if it is not registered."""
        city = self._sensors.get(sensor_id)
        if city is None:
            self._missed_sensors.add(sensor_id)
        return city

    def is_registered_city(self, city: str) -> bool:
        if city in self._cities:
            return True
        self._missed_cities.add(city)
        return False

    @property
    def city_count(self) -> int:
        return len(self._cities)

    def __len__(self) -> int:
        return len(self._sensors)


def enrich(
    normalized: Normalized, ctx: TopicContext, directory: SensorDirectory, *, strict: bool
) -> None:
    """Apply the registry to ``normalized`` in place: set each city, or reject the sensor."""
    if strict:
        _reject_unknown(normalized, directory)
    sensor_ids = {r.sensor_id for r in normalized.readings}
    sensor_ids |= {p.vehicle_id for p in normalized.positions}
    verdicts = {sid: city_verdict(sid, ctx, directory) for sid in sorted(sensor_ids)}
    normalized.rejections += [v for v in verdicts.values() if isinstance(v, Rejection)]
    cities = {sid: v for sid, v in verdicts.items() if isinstance(v, str)}
    normalized.readings = [
        r if r.city == cities[r.sensor_id] else dataclasses.replace(r, city=cities[r.sensor_id])
        for r in normalized.readings
        if r.sensor_id in cities
    ]
    normalized.positions = [
        p if p.city == cities[p.vehicle_id] else dataclasses.replace(p, city=cities[p.vehicle_id])
        for p in normalized.positions
        if p.vehicle_id in cities
    ]


def city_verdict(sensor_id: str, ctx: TopicContext, directory: SensorDirectory) -> str | Rejection:
    """The city a sensor's readings on this topic are stored under, or why they are not."""
    registered_in = directory.city_of(sensor_id)
    if ctx.city_from_topic:
        if not directory.is_registered_city(ctx.city):
            return _unknown_city(
                sensor_id, f"city {ctx.city!r} of the topic is not registered ({_ADD_CITY})"
            )
        if registered_in is not None and registered_in != ctx.city:
            return Rejection(
                "city_mismatch",
                f"sensor {sensor_id!r} is registered in city {registered_in!r}"
                f" but published under city {ctx.city!r}",
                Stage.ENRICH,
                sensor_id=sensor_id,
            )
        return ctx.city
    if registered_in is None:
        if not directory.is_registered_city(ctx.city):
            return _unknown_city(
                sensor_id,
                f"sensor {sensor_id!r} is not in the sensor registry, and the route's"
                f" fallback city {ctx.city!r} (NAKHON_PROCESSOR_LORAWAN_CITY) is not"
                f" registered ({_ADD_CITY}, or nakhon sensors import the device)",
            )
        return ctx.city
    if not directory.is_registered_city(registered_in):
        return _unknown_city(
            sensor_id,
            f"sensor {sensor_id!r} is in the sensor registry with city {registered_in!r},"
            f" which is not registered ({_ADD_CITY})",
        )
    return registered_in


def _unknown_city(sensor_id: str, detail: str) -> Rejection:
    return Rejection("unknown_city", detail, Stage.ENRICH, sensor_id=sensor_id)


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
