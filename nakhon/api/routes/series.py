"""/v1/series: bucketed time series of one metric, per sensor or for a whole city."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from nakhon.api.auth import check_city, require
from nakhon.api.database import Conn, heavy_connection
from nakhon.api.errors import ApiError
from nakhon.api.keys import Grant
from nakhon.api.models import ErrorBody, Point, Series, SeriesResponse
from nakhon.api.params import ID_PATTERN, METRIC_PATTERN, as_utc, check_range, parse_interval
from nakhon.api.queries.sensors import sensors_in
from nakhon.api.queries.series import (
    Agg,
    Fill,
    SeriesRequest,
    bucket_count,
    fetch_series,
    fill_points,
)

router = APIRouter(tags=["series"])

#: Sensors one request may name (each is one series).
MAX_SENSORS = 100


@router.get(
    "/series",
    response_model=SeriesResponse,
    summary="Bucketed time series",
    description=(
        "Give `sensor_id` (repeatable: one series per sensor) and/or `city` (alone: one series "
        "aggregating every reading of the city). Times without a zone are UTC. The range "
        "[start, end) is split into buckets on TimescaleDB's time_bucket grid. Served from "
        "readings_1h or readings_1m when the bucket is a whole number of hours or minutes and "
        "start and end lie on that grid, else from raw readings. Series x buckets may not "
        "exceed the server's max_points (400 too_many_points)."
    ),
    responses={400: {"model": ErrorBody}},
)
async def series(
    grant: Annotated[Grant, Depends(require("readings"))],
    request: Request,
    conn: Annotated[Conn, Depends(heavy_connection)],
    metric: Annotated[str, Query(pattern=METRIC_PATTERN)],
    start: datetime,
    end: datetime,
    bucket: Annotated[str, Query(description="30s, 5m, 1h, 1d, 1w ...")] = "5m",
    agg: Agg = "avg",
    sensor_id: Annotated[list[str] | None, Query(max_length=MAX_SENSORS)] = None,
    city: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    fill: Annotated[
        Fill, Query(description="none: only buckets with data; null; previous (LOCF)")
    ] = "none",
) -> SeriesResponse:
    ids = tuple(dict.fromkeys(sensor_id or ()))
    for sid in ids:
        if not _valid_id(sid):
            raise ApiError(
                400, "invalid_parameter", f"sensor_id: {sid!r} is not 1–64 of [a-z0-9_-]"
            )
    if not ids and city is None:
        raise ApiError(400, "invalid_parameter", "give sensor_id (one or more) or city")
    width = parse_interval("bucket", bucket)
    start, end = as_utc(start), as_utc(end)
    check_range(start, end, request.app.state.max_range)
    if city is not None:
        check_city(grant, city)
    req = SeriesRequest(metric, start, end, width, agg, ids, city, fill, grant.cities)
    max_points: int = request.app.state.max_points
    points = req.series_count * bucket_count(start, end, width)
    if points > max_points:
        raise ApiError(
            400,
            "too_many_points",
            f"{req.series_count} series x {points // req.series_count} buckets = {points} points,"
            f" more than the {max_points} allowed: use a larger bucket, a shorter range"
            " or fewer sensors",
        )
    if ids and grant.cities is not None:
        # A key bound to cities: unknown sensors and other cities' alike are 404.
        visible = await sensors_in(conn, ids, grant.cities)
        for sid in ids:
            if sid not in visible:
                raise ApiError(404, "not_found", f"no sensor {sid!r}")
    source, found = await fetch_series(conn, req)
    return SeriesResponse(
        metric=metric,
        agg=agg,
        bucket_seconds=width.total_seconds(),
        start=start,
        end=end,
        source=source.name,  # type: ignore[arg-type]
        series=[
            Series(
                sensor_id=key if req.per_sensor else None,
                city=None if req.per_sensor else key,
                points=[Point(time=t, value=v) for t, v in fill_points(values, req)],
            )
            for key, values in found.items()
        ],
    )


def _valid_id(value: str) -> bool:
    return re.fullmatch(ID_PATTERN, value) is not None
