"""The values that travel through the pipeline, from MQTT message to stored row.

They are plain frozen dataclasses: cheap to build on the hot path, with no I/O.
Validation of untrusted input happens in the codecs (pydantic where a payload
has a schema) and in :mod:`nakhon.processors.normalize`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One MQTT message as the gateway put it on ``nakhon.raw``: bytes untouched."""

    mqtt_topic: str
    payload: bytes
    received_at: datetime
    gateway: str = ""
    content_type: str | None = None
    partition: int = -1
    offset: int = -1
    #: The ``replayed_from`` header ``nakhon replay`` writes on a record it sends back;
    #: a dead letter made of this record carries it, so a replay can count its rejections.
    replayed_from: str | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """One value as a codec found it, before the metric catalogue gave it meaning.

    ``name`` and ``unit`` are the device's own words (``PM2.5``, ``ug/m3``);
    ``time`` is None when the payload carried no time for it.
    """

    sensor_id: str
    name: str
    value: float
    unit: str | None = None
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class PositionFix:
    """One vehicle position as a codec found it (speed in km/h, heading in degrees)."""

    vehicle_id: str
    lat: float
    lon: float
    speed_kmh: float | None = None
    heading: float | None = None
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """A canonical reading: one row of ``readings`` (metric and unit from the catalogue)."""

    time: datetime
    sensor_id: str
    metric: str
    value: float
    city: str


@dataclass(frozen=True, slots=True)
class Position:
    """A validated vehicle fix: one row of ``positions``."""

    time: datetime
    vehicle_id: str
    lat: float
    lon: float
    speed_kmh: float | None
    heading: float | None
    city: str


class Stage(StrEnum):
    """Where in the processor a payload or a value was rejected."""

    ROUTE = "route"
    DECODE = "decode"
    VALIDATE = "validate"
    NORMALIZE = "normalize"
    ENRICH = "enrich"
    #: The database refused the payload's rows (``storage_rejected``).
    STORE = "store"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a payload, or one value in it, was refused.

    ``reason`` is a short machine-readable code (``malformed_json``,
    ``out_of_range`` ...), stable across releases so operators can alert on it;
    ``detail`` is the message for a human.
    """

    reason: str
    detail: str
    stage: Stage
    sensor_id: str | None = None
    metric: str | None = None


@dataclass(slots=True)
class Decoded:
    """What a codec made of one payload."""

    observations: list[Observation] = field(default_factory=list)
    positions: list[PositionFix] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
