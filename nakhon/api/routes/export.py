"""/v1/export: a city's readings as a streamed CSV, the same rows as ``nakhon export``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from nakhon.api.auth import check_city, require
from nakhon.api.database import Conn, heavy_connection
from nakhon.api.errors import ApiError
from nakhon.api.keys import Grant
from nakhon.api.models import ErrorBody
from nakhon.api.params import ID_PATTERN, METRIC_PATTERN, as_utc, check_range, parse_interval
from nakhon.storage.export import CsvEncoder, ExportRequest, package_name, stream_rows

router = APIRouter(tags=["export"])

#: Metrics one request may name.
MAX_METRICS = 20


@router.get(
    "/export",
    summary="A city's readings as CSV (open data)",
    description=(
        "Streams the readings of one city's `metric`s (repeatable) over [start, end) as CSV "
        "(UTF-8, header row, ISO 8601 UTC times, a unit column): `time, city, sensor_id, metric, "
        "value, unit` per reading, or with `bucket` (e.g. 1h) `bucket_start, city, sensor_id, "
        "metric, avg, min, max, count, unit` per sensor and bucket, from the rollups when the "
        "bucket and range fit their grid. Times without a zone are UTC. The same rows as "
        "`nakhon export`, which also writes the sensors and a datapackage.json."
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
    request: Request,
    conn: Annotated[Conn, Depends(heavy_connection)],
    city: Annotated[str, Query(pattern=ID_PATTERN)],
    metric: Annotated[list[str], Query(min_length=1, max_length=MAX_METRICS)],
    start: datetime,
    end: datetime,
    bucket: Annotated[str | None, Query(description="e.g. 1h; none: every reading")] = None,
) -> StreamingResponse:
    metrics = tuple(dict.fromkeys(metric))
    for name in metrics:
        if re.fullmatch(METRIC_PATTERN, name) is None:
            raise ApiError(400, "invalid_parameter", f"metric: {name!r} is not 1–64 of [a-z0-9_]")
    width = parse_interval("bucket", bucket) if bucket is not None else None
    start, end = as_utc(start), as_utc(end)
    check_range(start, end, request.app.state.max_range)
    check_city(grant, city)
    req = ExportRequest(city, metrics, start, end, width)
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
