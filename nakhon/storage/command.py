"""``nakhon migrate``: bring the database schema up to date, as its owner.

Also registers ``nakhon db`` (nakhon/storage/roles_command.py): the roles
the migrations grant rights to.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import psycopg

from nakhon.cli import configure_logging
from nakhon.config import RetentionSettings, load_settings
from nakhon.storage import roles_command
from nakhon.storage.maintenance import install_community_policies
from nakhon.storage.migrate import available_migrations, migrate, timescaledb_edition

log = logging.getLogger("nakhon.migrate")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "migrate",
        help="apply pending schema migrations (safe to run from several processes at once)",
        description=(
            "Apply the schema migrations the database lacks, in order, as the schema's owner "
            "(NAKHON_DB_DSN, role nakhon_owner). On TimescaleDB Community, also (re)install the "
            "refresh, compression and retention policies from NAKHON_RETENTION_*. The services "
            "never migrate: they wait until the schema is there."
        ),
    )
    p.set_defaults(func=run_migrate)
    roles_command.register(sub)


def run_migrate(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    dsn = settings.db.dsn.get_secret_value()
    try:
        applied = migrate(dsn)
        with psycopg.connect(dsn) as conn:
            edition = timescaledb_edition(conn)
        if edition == "community":
            asyncio.run(_install_policies(dsn, settings.retention))
    except psycopg.OperationalError as exc:
        log.error("cannot reach the database: %s", exc)
        return 1
    except psycopg.Error as exc:
        hint = exc.diag.message_hint
        log.error("migration failed: %s%s", exc, f" ({hint})" if hint else "")
        return 1
    latest = available_migrations()[-1].version
    log.info(
        "schema at version %04d (%d applied now), TimescaleDB %s edition",
        latest,
        len(applied),
        edition,
    )
    return 0


async def _install_policies(dsn: str, retention: RetentionSettings) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await install_community_policies(conn, retention)
