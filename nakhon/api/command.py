"""``nakhon api``: serve the HTTP API with uvicorn on settings.api host and port.

Closed by default: unless ``NAKHON_API_PUBLIC`` is on, the API starts only
when the database holds an active key (``nakhon api-keys create``); with none,
it exits 2 saying so, instead of serving a /v1 nobody can read (or, worse,
that everybody can). A database still starting or not yet migrated is waited
for, up to ``startup_wait_s`` (then exit 3), so a supervisor may start the
API together with the database.

uvicorn handles SIGTERM/SIGINT: it stops accepting connections, lets
in-flight requests finish (up to ``shutdown_grace_s``), then runs the app's
lifespan exit, which closes the connection pool.
"""

from __future__ import annotations

import argparse
import logging
import time

import psycopg
import uvicorn

from nakhon.api.app import create_app
from nakhon.api.key_store import any_active_key
from nakhon.cli import configure_logging
from nakhon.config import MissingDsnError, load_settings

log = logging.getLogger("nakhon.api")

EXIT_REFUSED = 2
EXIT_DATABASE = 3


class StartRefused(Exception):
    """The API may not start: the message says why, ``exit_code`` is the process's."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_keys_before_serving(dsn: str, wait_s: float) -> None:
    """Return once an API key is active; :class:`StartRefused` if none is, or no answer.

    Connection failures and a missing ``api_keys`` table (migrations not run
    yet) are retried with capped backoff for ``wait_s`` seconds; an answer
    without an active key is final at once.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.2
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=max(1, min(5, round(wait_s)))) as conn:
                active = any_active_key(conn)
            break
        except psycopg.errors.UndefinedTable as exc:
            why: str = "the table api_keys does not exist (run nakhon migrate)"
            cause: Exception = exc
        except psycopg.OperationalError as exc:
            why, cause = f"the database did not answer: {exc}", exc
        except psycopg.Error as exc:  # e.g. a role without SELECT on api_keys: no use waiting
            raise StartRefused(EXIT_DATABASE, f"cannot check the API keys: {exc}") from exc
        if time.monotonic() + delay > deadline:
            raise StartRefused(
                EXIT_DATABASE, f"no answer to the API key check within {wait_s:g} s: {why}"
            ) from cause
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
    if not active:
        raise StartRefused(
            EXIT_REFUSED,
            "no active API key, and the API is not public: it would answer every /v1 request"
            " with 401. Create a key with 'nakhon api-keys create --name NAME --city CITY'"
            " (or --all-cities), or set NAKHON_API_PUBLIC=true to serve open data without keys"
            " (scopes NAKHON_API_PUBLIC_SCOPES).",
        )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "api",
        help="serve the query API for city apps (OpenAPI at /openapi.json, docs at /docs)",
        description=(
            "Serve /v1 (cities, sensors, series, aqi, vehicles), /healthz, /readyz, /metrics."
        ),
    )
    p.set_defaults(func=run_api)


def run_api(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        dsn = settings.db.service_dsn("api")
    except MissingDsnError as exc:  # NAKHON_DB_API_DSN: never the owner's by default
        log.error("%s", exc)
        return EXIT_REFUSED
    if settings.api.public:
        log.warning(
            "public mode: /v1 answers requests without a key, scopes %s", settings.api.public_scopes
        )
    else:
        try:
            check_keys_before_serving(dsn, settings.api.startup_wait_s)
        except StartRefused as exc:
            log.error("not starting: %s", exc)
            return exc.exit_code
    app = create_app(settings)
    log.info("serving on http://%s:%d", settings.api.host, settings.api.port)
    uvicorn.run(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.api.shutdown_grace_s),
        access_log=False,
        log_config=None,
    )
    return 0
