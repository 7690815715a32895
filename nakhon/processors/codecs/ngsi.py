"""``ngsi``: FIWARE Smart Data Models entities (NGSI-LD or NGSI v2, normalized or keyValues).

Shapes accepted:
- NGSI-LD normalized: ``"pm25": {"type": "Property", "value": 41, "unitCode": "GQ",
  "observedAt": "..."}``; a multi-instance attribute (a list of such) too;
- NGSI v2 normalized: ``"pm25": {"type": "Number", "value": 41,
  "metadata": {"unitCode": {"value": "GQ"}}}``;
- keyValues (either): ``"pm25": 41``;
- one entity, an array of entities, or a notification ``{"data": [...]}``.

Which attributes are measurements, per entity type (attribute names checked
against smart-data-models examples: dataModel.Environment
AirQualityObserved/examples/example-normalized.jsonld (which spells the
gases ``CO``, ``NO2``, ``SO2`` in its current version and lower case before),
NoiseLevelObserved/examples/example-normalized.jsonld, FloodMonitoring/
examples/example.jsonld (``currentLevel``, ``observationDateTime``);
dataModel.Transportation TrafficFlowObserved/examples/example-normalized.jsonld
(``intensity``, ``occupancy`` 0.76, ``averageVehicleSpeed``)): see
:data:`MEASUREMENTS`. Entity types not listed there contribute every numeric
attribute under its own name (the catalogue maps or marks it).

Model knowledge the catalogue must not guess:
- ``relativeHumidity`` and ``occupancy`` are fractions 0–1 in these models and
  are scaled ×100, unless their ``unitCode`` is ``P1`` (percent);
- ParkingSpot ``status`` ``free``/``occupied`` is ``parking_free`` 1/0;
- FloodMonitoring ``currentLevel`` is ``water_level`` (m).

Time of a value: its ``observedAt``, else the entity's ``dateObserved`` (the end
of an ``a/b`` interval), ``dateObservedTo``, ``observationDateTime``, else none.
Sensor: the topic's, else the id of ``refDevice``, else of the entity
(``urn:ngsi-ld:<Type>:<id>`` -> ``<id>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import orjson

from nakhon.domain.records import Decoded, Observation, Rejection, Stage
from nakhon.processors.codecs.base import DecodeError, TopicContext
from nakhon.processors.codecs.fields import InvalidTime, as_number, parse_time

_AIR = ("pm1", "pm25", "pm10", "o3", "no2", "so2", "co", "co2", "CO", "NO2", "SO2", "O3", "CO2")
_WEATHER = ("temperature", "relativeHumidity", "atmosphericPressure", "precipitation",
            "windSpeed", "windDirection")  # fmt: skip

#: Entity type -> attribute -> the name passed on (None: the attribute's own name).
MEASUREMENTS: Mapping[str, Mapping[str, str | None]] = {
    "AirQualityObserved": dict.fromkeys((*_AIR, *_WEATHER)),
    "WeatherObserved": dict.fromkeys(_WEATHER),
    "NoiseLevelObserved": dict.fromkeys(("LAeq", "LAS", "LAmax")),
    "TrafficFlowObserved": dict.fromkeys(("intensity", "occupancy", "averageVehicleSpeed")),
    "ParkingSpot": {"status": "parking_free"},
    "OffStreetParking": {"availableSpotNumber": None, "occupancy": None},
    "OnStreetParking": {"availableSpotNumber": None, "occupancy": None},
    "FloodMonitoring": {"currentLevel": "water_level"},
}
_RATIOS = frozenset({"relativeHumidity", "occupancy"})
_PERCENT_CODE = "P1"  # UN/CEFACT Rec. 20: percent
_PARKING_STATUS = {"free": 1.0, "occupied": 0.0}
_NOT_MEASUREMENTS = frozenset(
    {"id", "type", "@context", "location", "address", "name", "description", "source",
     "dataProvider", "dateCreated", "dateModified", "airQualityIndex", "reliability", "laneId"}
)  # fmt: skip
_TIME_ATTRIBUTES = ("dateObserved", "dateObservedTo", "observationDateTime", "dateObservedFrom")


class NgsiCodec:
    """``ngsi``: a Smart Data Models entity, or a batch / notification of them."""

    name = "ngsi"

    def decode(self, payload: bytes, ctx: TopicContext) -> Decoded:
        return decode_ngsi(payload, ctx)


def decode_ngsi(payload: bytes, ctx: TopicContext) -> Decoded:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed_json", str(exc)[:200]) from exc
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    entities = document if isinstance(document, list) else [document]
    decoded = Decoded()
    for entity in entities:
        if not isinstance(entity, dict) or not isinstance(entity.get("type"), str):
            raise DecodeError("malformed_entity", "an entity is an object with a type")
        _decode_entity(entity, ctx, decoded)
    return decoded


def _decode_entity(entity: dict[str, object], ctx: TopicContext, decoded: Decoded) -> None:
    entity_type = str(entity["type"])
    sensor_id = (
        ctx.sensor_id
        or _urn_id(_relationship(entity.get("refDevice")))
        or _urn_id(entity.get("id"))
    )
    if not sensor_id:
        raise DecodeError("missing_sensor_id", "no topic sensor, refDevice or entity id")
    entity_time = _entity_time(entity)
    wanted = MEASUREMENTS.get(entity_type)
    for attribute, raw in entity.items():
        if wanted is None:
            if attribute in _NOT_MEASUREMENTS or attribute.startswith("ref"):
                continue
            name = attribute
        elif attribute in wanted:
            name = wanted[attribute] or attribute
        else:
            continue
        instances = raw if isinstance(raw, list) else [raw]
        for instance in instances:
            _decode_attribute(
                attribute,
                name,
                instance,
                sensor_id,
                entity_time,
                decoded,
                strict=wanted is not None,
            )


def _decode_attribute(
    attribute: str,
    name: str,
    instance: object,
    sensor_id: str,
    entity_time: datetime | None,
    decoded: Decoded,
    *,
    strict: bool,
) -> None:
    raw, unit, time = _property(instance)
    if attribute == "status":
        value = _PARKING_STATUS.get(raw) if isinstance(raw, str) else None
        if value is None:
            return  # closed / unknown / absent: no statement about free spaces
    else:
        value = as_number(raw)
    if value is None:
        if strict:
            decoded.rejections.append(
                Rejection(
                    "non_numeric_value",
                    f"{attribute} is not a number",
                    Stage.DECODE,
                    sensor_id=sensor_id,
                    metric=attribute,
                )
            )
        return
    if attribute in _RATIOS and unit != _PERCENT_CODE:
        value, unit = value * 100.0, None
    if time is None:
        time = entity_time
    decoded.observations.append(Observation(sensor_id, name, value, unit, time))


def _property(instance: object) -> tuple[object, str | None, datetime | None]:
    """(value, unitCode, observedAt) of a normalized attribute, or (value, None, None)."""
    if not isinstance(instance, dict) or "value" not in instance:
        return instance, None, None
    unit = instance.get("unitCode")
    metadata = instance.get("metadata")
    if unit is None and isinstance(metadata, dict):  # NGSI v2
        unit = _value_of(metadata.get("unitCode"))
    observed = instance.get("observedAt")
    time = None
    if observed is not None:
        try:
            time = parse_time(observed)
        except InvalidTime:
            time = None  # fall back to the entity's time
    return instance["value"], unit if isinstance(unit, str) else None, time


def _entity_time(entity: dict[str, object]) -> datetime | None:
    for attribute in _TIME_ATTRIBUTES:
        if attribute not in entity:
            continue
        raw = _value_of(entity[attribute])
        if isinstance(raw, dict):  # NGSI-LD {"@type": "DateTime", "@value": ...}
            raw = raw.get("@value")
        if isinstance(raw, str) and "/" in raw:
            raw = raw.rsplit("/", 1)[1]  # an ISO 8601 interval: the end
        try:
            return parse_time(raw)
        except InvalidTime as exc:
            raise DecodeError("invalid_time", f"{attribute}: {exc}") from exc
    return None


def _value_of(attribute: object) -> object:
    if isinstance(attribute, dict) and "value" in attribute:
        return attribute["value"]
    return attribute


def _relationship(attribute: object) -> object:
    if isinstance(attribute, dict):
        return attribute.get("object", attribute.get("value"))
    return attribute


def _urn_id(urn: object) -> str | None:
    """``urn:ngsi-ld:Device:aq-7`` -> ``aq-7``; a bare id is itself."""
    if not isinstance(urn, str) or not urn:
        return None
    if urn.startswith("urn:ngsi-ld:"):
        parts = urn.split(":", 3)
        return parts[3] if len(parts) == 4 and parts[3] else None
    return urn
