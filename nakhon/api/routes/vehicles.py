"""/v1/vehicles: where a city's vehicles are, and where one has been."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from nakhon.api.auth import check_city, require
from nakhon.api.database import Conn, heavy_connection
from nakhon.api.errors import ApiError
from nakhon.api.keys import Grant
from nakhon.api.models import ErrorBody, Track, TrackPoint, VehiclePage, VehiclePosition
from nakhon.api.params import ID_PATTERN, as_utc, check_range, parse_interval
from nakhon.api.queries import vehicles as q

router = APIRouter(tags=["vehicles"], responses={400: {"model": ErrorBody}})


@router.get(
    "/vehicles/latest",
    response_model=VehiclePage,
    summary="Newest position of each vehicle of a city (paged by vehicle id)",
)
async def vehicles_latest(
    grant: Annotated[Grant, Depends(require("vehicles"))],
    conn: Annotated[Conn, Depends(heavy_connection)],
    city: Annotated[str, Query(pattern=ID_PATTERN)],
    max_age: Annotated[str, Query(description="Leave out vehicles silent for longer")] = "15m",
    after: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> VehiclePage:
    check_city(grant, city)
    rows = await q.latest_positions(conn, city, parse_interval("max_age", max_age), after, limit)
    items = [VehiclePosition.model_validate(r) for r in rows[:limit]]
    return VehiclePage(items=items, next_cursor=items[-1].vehicle_id if len(rows) > limit else None)


@router.get(
    "/vehicles/{vehicle_id}/track",
    response_model=Track,
    summary="One vehicle's positions in [start, end), oldest first (paged by time)",
)
async def vehicle_track(
    grant: Annotated[Grant, Depends(require("vehicles"))],
    request: Request,
    conn: Annotated[Conn, Depends(heavy_connection)],
    vehicle_id: Annotated[str, Path(pattern=ID_PATTERN)],
    start: datetime,
    end: datetime,
    after: Annotated[datetime | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int | None, Query(ge=1, description="Default and maximum: max_points")] = None,
) -> Track:
    start, end = as_utc(start), as_utc(end)
    check_range(start, end, request.app.state.max_range)
    max_points: int = request.app.state.max_points
    page = min(limit or max_points, max_points)
    rows = await q.track(
        conn,
        vehicle_id,
        start,
        end,
        as_utc(after) if after is not None else None,
        page,
        grant.cities,
    )
    if (
        not rows
        and grant.cities is not None
        and not await q.vehicle_seen(conn, vehicle_id, grant.cities)
    ):
        # A key bound to cities: unknown vehicles and other cities' alike are 404.
        raise ApiError(404, "not_found", f"no vehicle {vehicle_id!r}")
    points = [TrackPoint.model_validate(r) for r in rows[:page]]
    return Track(
        vehicle_id=vehicle_id,
        points=points,
        next_cursor=points[-1].time if len(rows) > page else None,
    )
