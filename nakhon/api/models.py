"""Response bodies: the JSON city apps read, as documented in /openapi.json."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable reason, e.g. too_many_points")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class City(BaseModel):
    city: str
    #: Registered sensors and vehicles.
    sensors: int
    #: The time of the city's newest stored reading (of its sensors, not vehicles).
    last_reading: datetime | None


class Sensor(BaseModel):
    sensor_id: str
    city: str
    kind: str | None
    name: str | None
    lat: float | None
    lon: float | None
    metadata: dict[str, Any]
    first_seen: datetime | None
    last_seen: datetime | None
    distance_m: float | None = Field(default=None, description="Only with near=")


class SensorPage(BaseModel):
    items: list[Sensor]
    next_cursor: str | None = Field(description="Pass as after= for the next page")


class LatestValue(BaseModel):
    metric: str
    time: datetime
    value: float


class SensorLatest(BaseModel):
    sensor_id: str
    values: list[LatestValue]


class Point(BaseModel):
    time: datetime
    value: float | None


class Series(BaseModel):
    sensor_id: str | None = Field(description="Set for per-sensor series")
    city: str | None = Field(description="Set for a whole-city series")
    points: list[Point]


class SeriesResponse(BaseModel):
    metric: str
    agg: str
    bucket_seconds: float
    start: datetime
    end: datetime
    source: Literal["readings", "readings_1m", "readings_1h"]
    series: list[Series]


class AqiStation(BaseModel):
    sensor_id: str
    name: str | None
    lat: float | None
    lon: float | None
    aqi: int
    band: str
    colour: str
    colour_hex: str
    dominant: str
    sub_indices: dict[str, int]
    concentrations: dict[str, float] = Field(
        description="Averages used: pm2_5_24h, pm10_24h, o3_8h, o3_1h, co_8h, no2_1h, so2_1h"
    )


class AqiResponse(BaseModel):
    city: str
    standard: Literal["th", "us"]
    at: datetime
    stations: list[AqiStation]


class VehiclePosition(BaseModel):
    vehicle_id: str
    time: datetime
    lat: float
    lon: float
    speed_kmh: float | None
    heading: float | None


class VehiclePage(BaseModel):
    items: list[VehiclePosition]
    next_cursor: str | None


class TrackPoint(BaseModel):
    time: datetime
    lat: float
    lon: float
    speed_kmh: float | None
    heading: float | None


class Track(BaseModel):
    vehicle_id: str
    points: list[TrackPoint]
    next_cursor: datetime | None = Field(description="Pass as after= for the next page")


class Health(BaseModel):
    status: str
