"""/v1/aqi: the current air quality index of each station of a city."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from nakhon.api.auth import check_city, require
from nakhon.api.database import Conn, heavy_connection
from nakhon.api.keys import Grant
from nakhon.api.models import AqiResponse, AqiStation, ErrorBody
from nakhon.api.params import ID_PATTERN, as_utc
from nakhon.api.queries import aqi as q
from nakhon.domain.aqi import thai_aqi, us_aqi

router = APIRouter(tags=["air quality"], responses={400: {"model": ErrorBody}})


@router.get(
    "/aqi",
    response_model=AqiResponse,
    summary="AQI per station: Thailand PCD (th) or US EPA (us)",
    description=(
        "Averages per pollutant over its own period ending at `at` (default now): PM 24 h, "
        "O3 and CO 8 h, NO2 and SO2 1 h. Stations without any of these pollutants in the last "
        "24 h are left out."
    ),
)
async def aqi(
    grant: Annotated[Grant, Depends(require("aqi"))],
    conn: Annotated[Conn, Depends(heavy_connection)],
    city: Annotated[str, Query(pattern=ID_PATTERN)],
    standard: Literal["th", "us"] = "th",
    at: datetime | None = None,
) -> AqiResponse:
    check_city(grant, city)
    when = as_utc(at) if at is not None else datetime.now(UTC)
    index = thai_aqi if standard == "th" else us_aqi
    stations = []
    for row in await q.station_averages(conn, city, when):
        result = index(q.concentrations(row))
        if result is None:
            continue
        stations.append(
            AqiStation(
                sensor_id=row["sensor_id"],
                name=row["name"],
                lat=row["lat"],
                lon=row["lon"],
                aqi=result.index,
                band=result.band,
                colour=result.colour_name,
                colour_hex=result.colour_hex,
                dominant=result.dominant,
                sub_indices=dict(result.sub_indices),
                concentrations={k: row[k] for k in q.CONCENTRATION_FIELDS if row[k] is not None},
            )
        )
    return AqiResponse(city=city, standard=standard, at=when, stations=stations)
