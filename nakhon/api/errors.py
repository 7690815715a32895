"""Every error the API returns is JSON: ``{"error": {"code": ..., "message": ...}}``.

City apps branch on ``code`` (stable, machine-readable) and show ``message``
(human-readable, names the parameter at fault). Database trouble maps to 503
so a client retries, instead of a bare 500 that hides what happened.
"""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout, TooManyRequests
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a request handler returns on purpose."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


_STATUS_CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    429: "rate_limited",
}


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, "invalid_parameter", _validation_message(exc))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    async def busy(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database pool exhausted: %s", exc)
        return error_response(503, "busy", "too many requests waiting for the database; retry")

    async def timed_out(_: Request, exc: Exception) -> JSONResponse:
        return error_response(
            503,
            "query_timeout",
            "the query ran past the server's time limit; narrow the range, or align start "
            "and end to whole minutes or hours so rollups can serve it",
        )

    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.error("database unavailable: %s", exc)
        return error_response(503, "database_unavailable", "the database is unreachable; retry")

    async def out_of_range(_: Request, exc: Exception) -> JSONResponse:
        # Date arithmetic past year 1 or 9999 (a bucket far before the epoch, say).
        return error_response(
            400, "invalid_parameter", f"a date or interval is out of the supported range: {exc}"
        )

    async def internal(_: Request, exc: Exception) -> JSONResponse:
        # A bug: say so in JSON (the contract), with the details in our log only.
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "internal", "an internal error occurred; it has been logged")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(OverflowError, out_of_range)
    app.add_exception_handler(Exception, internal)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(PoolTimeout, busy)
    app.add_exception_handler(TooManyRequests, busy)
    app.add_exception_handler(psycopg.errors.QueryCanceled, timed_out)
    app.add_exception_handler(psycopg.OperationalError, unavailable)
