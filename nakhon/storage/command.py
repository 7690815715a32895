"""``nakhon migrate``: bring the database schema up to date."""

from __future__ import annotations

import argparse
import logging

import psycopg

from nakhon.cli import configure_logging
from nakhon.config import load_settings
from nakhon.storage.migrate import available_migrations, migrate, timescaledb_edition

log = logging.getLogger("nakhon.migrate")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "migrate",
        help="apply pending schema migrations (safe to run from several processes at once)",
        description="Apply the schema migrations the database (NAKHON_DB_DSN) lacks, in order.",
    )
    p.set_defaults(func=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    dsn = settings.db.dsn.get_secret_value()
    try:
        applied = migrate(dsn)
        with psycopg.connect(dsn) as conn:
            edition = timescaledb_edition(conn)
    except psycopg.OperationalError as exc:
        log.error("cannot reach the database: %s", exc)
        return 1
    latest = available_migrations()[-1].version
    log.info(
        "schema at version %04d (%d applied now), TimescaleDB %s edition",
        latest,
        len(applied),
        edition,
    )
    return 0
