"""/v1/export: a city's readings as open data, the same files as ``nakhon export``.

``GET /v1/export`` streams the readings CSV; ``/v1/export/sensors.csv`` the
exported sensors with their places; ``/v1/export/datapackage.json`` the
Frictionless Data Package describing both (built by the CLI's own
:func:`nakhon.storage.export.data_package`), whose resources' ``path`` are the
URLs of the other two for the same query. All three take the same parameters
and check the key the same way (the ``readings`` scope, 403; the city, 404;
the range, 400); the sensors file also needs the ``sensors`` scope, which
guards sensor places everywhere else in the API (``/v1/sensors``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from nakhon.api.auth import check_city, require
from nakhon.api.database import Conn, heavy_connection
from nakhon.api.errors import ApiError
from nakhon.api.keys import Grant
from nakhon.api.models import ErrorBody
from nakhon.api.params import ID_PATTERN, METRIC_PATTERN, as_utc, check_range, parse_interval
from nakhon.storage.export import (
    DEFAULT_LICENCE,
    LICENCES,
    CsvEncoder,
    ExportRequest,
    data_package,
    fetch_city_sensors,
    format_bucket,
    format_time,
    package_name,
    sensors_csv,
    stream_rows,
)

router = APIRouter(tags=["export"])

#: Metrics one request may name.
MAX_METRICS = 20

_QUERY_DOC = (
    "Parameters: `city`, `metric` (repeatable), `start`, `end` (times without a zone are UTC; "
    "within NAKHON_API_MAX_RANGE_DAYS) and optionally `bucket` (e.g. 1h)."
)


async def export_request(
    request: Request,
    city: Annotated[str, Query(pattern=ID_PATTERN)],
    metric: Annotated[list[str], Query(min_length=1, max_length=MAX_METRICS)],
    start: datetime,
    end: datetime,
    bucket: Annotated[str | None, Query(description="e.g. 1h; none: every reading")] = None,
) -> ExportRequest:
    """The export the query asks for, validated (400) but not yet checked against the key."""
    metrics = tuple(dict.fromkeys(metric))
    for name in metrics:
        if re.fullmatch(METRIC_PATTERN, name) is None:
            raise ApiError(400, "invalid_parameter", f"metric: {name!r} is not 1–64 of [a-z0-9_]")
    width = parse_interval("bucket", bucket) if bucket is not None else None
    start, end = as_utc(start), as_utc(end)
    check_range(start, end, request.app.state.max_range)
    return ExportRequest(city, metrics, start, end, width)


Export = Annotated[ExportRequest, Depends(export_request)]


@router.get(
    "/export",
    summary="A city's readings as CSV (open data)",
    description=(
        "Streams the readings of one city's `metric`s (repeatable) over [start, end) as CSV "
        "(UTF-8, header row, ISO 8601 UTC times, a unit column): `time, city, sensor_id, metric, "
        "value, unit` per reading, or with `bucket` (e.g. 1h) `bucket_start, city, sensor_id, "
        "metric, avg, min, max, count, unit` per sensor and bucket, from the rollups when the "
        "bucket and range fit their grid. Times without a zone are UTC. The same rows as "
        "`nakhon export`. Its metadata: `/v1/export/datapackage.json` and "
        "`/v1/export/sensors.csv` with the same parameters."
    ),
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}}, "description": "the rows, streamed"},
        400: {"model": ErrorBody},
        404: {"model": ErrorBody},
    },
)
async def export(
    grant: Annotated[Grant, Depends(require("readings"))],
    req: Export,
    conn: Annotated[Conn, Depends(heavy_connection)],
) -> StreamingResponse:
    check_city(grant, req.city)
    filename = package_name(req) + ".csv"
    # The first batch before the response starts: a query that fails is a JSON
    # error (503 on a timeout or a lost database), not a CSV cut short.
    batches = stream_rows(conn, req)
    first = await anext(batches, None)
    return StreamingResponse(
        _csv(req, first, batches),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/export/sensors.csv",
    summary="The sensors of an export, with their places (open data)",
    description=(
        "The sensors of the city that have readings of the export's metrics over [start, end) "
        "(of the rollup a bucketed export reads), as CSV: `sensor_id, city, kind, name, lat, "
        "lon` (WGS 84 degrees), the file `nakhon export` writes beside its readings. "
        + _QUERY_DOC
        + " Needs the `readings` and `sensors` scopes (403), the city (404)."
    ),
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}}, "description": "the sensors"},
        400: {"model": ErrorBody},
        403: {"model": ErrorBody},
        404: {"model": ErrorBody},
    },
)
async def export_sensors(
    grant: Annotated[Grant, Depends(require("readings"))],
    req: Export,
    conn: Annotated[Conn, Depends(heavy_connection)],
) -> Response:
    check_city(grant, req.city)
    if "sensors" not in grant.scopes:
        raise ApiError(403, "forbidden", "this API key lacks the scope 'sensors'")
    rows = await fetch_city_sensors(conn, req)
    return Response(
        sensors_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{package_name(req)}-sensors.csv"'},
    )


@router.get(
    "/export/datapackage.json",
    summary="The Frictionless Data Package describing an export",
    description=(
        "A [Frictionless](https://specs.frictionlessdata.io/) Tabular Data Package, the "
        "`datapackage.json` of `nakhon export`: title, description, licence (`licence`, default "
        f"{DEFAULT_LICENCE}; one of {', '.join(LICENCES)}), time range (`temporal`), source, and "
        "two resources whose `path` are the URLs of `/v1/export` (the readings) and "
        "`/v1/export/sensors.csv` (the sensors with lat/lon) for the same query, with their "
        "columns' types and units. " + _QUERY_DOC + " Checks the key as `/v1/export` does."
    ),
    responses={
        200: {"content": {"application/json": {}}, "description": "the package"},
        400: {"model": ErrorBody},
        403: {"model": ErrorBody},
        404: {"model": ErrorBody},
    },
)
async def export_datapackage(
    grant: Annotated[Grant, Depends(require("readings"))],
    req: Export,
    request: Request,
    licence: Annotated[str, Query(description="licence id")] = DEFAULT_LICENCE,
) -> JSONResponse:
    if licence not in LICENCES:
        raise ApiError(
            400, "invalid_parameter", f"licence: {licence!r} is not one of {', '.join(LICENCES)}"
        )
    check_city(grant, req.city)
    query = _query_string(req)
    package = data_package(
        req,
        path=f"{request.url_for('export')}?{query}",
        sensors_path=f"{request.url_for('export_sensors')}?{query}",
        licence=licence,
    )
    return JSONResponse(package, media_type="application/json")


def _query_string(req: ExportRequest) -> str:
    """The export's parameters, normalized (UTC times, one of each metric) for its URLs."""
    params: list[tuple[str, str]] = [("city", req.city)]
    params += [("metric", m) for m in req.metrics]
    params += [("start", format_time(req.start)), ("end", format_time(req.end))]
    if req.bucket is not None:
        params.append(("bucket", format_bucket(req.bucket)))
    return urlencode(params)


async def _csv(
    req: ExportRequest,
    first: list[tuple[Any, ...]] | None,
    rest: AsyncIterator[list[tuple[Any, ...]]],
) -> AsyncIterator[str]:
    encoder = CsvEncoder(req.fields)
    yield encoder.header()
    if first is None:
        return
    yield encoder.rows(first)
    async for batch in rest:
        yield encoder.rows(batch)
