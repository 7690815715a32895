"""``nakhon api``: serve the HTTP API with uvicorn on settings.api host and port.

uvicorn handles SIGTERM/SIGINT: it stops accepting connections, lets
in-flight requests finish (up to ``shutdown_grace_s``), then runs the app's
lifespan exit, which closes the connection pool.
"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from nakhon.api.app import create_app
from nakhon.cli import configure_logging
from nakhon.config import MissingDsnError, load_settings

log = logging.getLogger("nakhon.api")


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
        app = create_app(settings)
    except MissingDsnError as exc:  # NAKHON_DB_API_DSN: never the owner's by default
        log.error("%s", exc)
        return 2
    if settings.api.public:
        log.warning(
            "public mode: /v1 answers requests without a key, scopes %s", settings.api.public_scopes
        )
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
