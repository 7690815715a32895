"""/v1/cities and /v1/sensors."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from nakhon.api.auth import authenticate, check_city, require
from nakhon.api.database import Conn, connection
from nakhon.api.errors import ApiError
from nakhon.api.keys import Grant
from nakhon.api.models import City, ErrorBody, LatestValue, Sensor, SensorLatest, SensorPage
from nakhon.api.params import (
    ID_PATTERN,
    KIND_PATTERN,
    METRIC_PATTERN,
    parse_bbox,
    parse_interval,
    parse_near,
)
from nakhon.api.queries import sensors as q

router = APIRouter(tags=["sensors"], responses={400: {"model": ErrorBody}})

SensorId = Annotated[str, Path(pattern=ID_PATTERN, description="1–64 of [a-z0-9_-]")]


@router.get("/cities", response_model=list[City], summary="Cities, sensor counts, last reading")
async def cities(
    grant: Annotated[Grant, Depends(authenticate)], conn: Annotated[Conn, Depends(connection)]
) -> list[City]:
    return [City.model_validate(row) for row in await q.list_cities(conn, grant.cities)]


@router.get("/sensors", response_model=SensorPage, summary="Find sensors (paged by sensor id)")
async def sensors(
    grant: Annotated[Grant, Depends(require("sensors"))],
    conn: Annotated[Conn, Depends(connection)],
    city: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    kind: Annotated[str | None, Query(pattern=KIND_PATTERN)] = None,
    metric: Annotated[
        str | None,
        Query(pattern=METRIC_PATTERN, description="Sensors that reported it in the last 7 days"),
    ] = None,
    near: Annotated[
        str | None, Query(description="lat,lon in degrees (WGS 84)", max_length=64)
    ] = None,
    radius_m: Annotated[float, Query(gt=0, le=200_000, description="With near=")] = 1000.0,
    bbox: Annotated[
        str | None, Query(description="min_lon,min_lat,max_lon,max_lat", max_length=128)
    ] = None,
    after: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SensorPage:
    if city is not None:
        check_city(grant, city)
    f = q.SensorFilter(
        city=city,
        visible=grant.cities,
        kind=kind,
        metric=metric,
        near=parse_near(near, radius_m) if near is not None else None,
        bbox=parse_bbox(bbox) if bbox is not None else None,
        after=after,
        limit=limit,
    )
    rows = await q.list_sensors(conn, f)
    items = [Sensor.model_validate(row) for row in rows[:limit]]
    next_cursor = items[-1].sensor_id if len(rows) > limit else None
    return SensorPage(items=items, next_cursor=next_cursor)


@router.get(
    "/sensors/{sensor_id}",
    response_model=Sensor,
    summary="One sensor",
    responses={404: {"model": ErrorBody}},
)
async def sensor(
    grant: Annotated[Grant, Depends(require("sensors"))],
    sensor_id: SensorId,
    conn: Annotated[Conn, Depends(connection)],
) -> Sensor:
    return Sensor.model_validate(await _visible_sensor(conn, grant, sensor_id))


async def _visible_sensor(conn: Conn, grant: Grant, sensor_id: str) -> dict[str, object]:
    """The sensor's row; 404 alike for a sensor that does not exist and one of another city."""
    row = await q.get_sensor(conn, sensor_id)
    if row is None or not grant.sees_city(row["city"]):
        raise ApiError(404, "not_found", f"no sensor {sensor_id!r}")
    return row


@router.get(
    "/sensors/{sensor_id}/latest",
    response_model=SensorLatest,
    summary="Latest value of each metric, with its time",
    responses={404: {"model": ErrorBody}},
)
async def sensor_latest(
    grant: Annotated[Grant, Depends(require("readings"))],
    request: Request,
    sensor_id: SensorId,
    conn: Annotated[Conn, Depends(connection)],
    max_age: Annotated[
        str | None,
        Query(description="Ignore readings older than this, e.g. 1h, 7d (default: raw retention)"),
    ] = None,
) -> SensorLatest:
    lookback: timedelta = (
        parse_interval("max_age", max_age)
        if max_age is not None
        else request.app.state.raw_retention
    )
    await _visible_sensor(conn, grant, sensor_id)
    rows = await q.latest_values(conn, sensor_id, lookback)
    return SensorLatest(sensor_id=sensor_id, values=[LatestValue.model_validate(r) for r in rows])
