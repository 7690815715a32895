"""Ordered, versioned schema migrations (``nakhon migrate``).

Migrations are the files ``migrations/NNNN_name.sql``, applied in order, each
once. The whole run holds a transaction-scoped advisory lock, so two
processes starting at once apply each migration exactly once: the second
waits, then finds nothing left to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

#: Arbitrary but fixed: the advisory lock key of Nakhon's migrations.
MIGRATION_LOCK_KEY = 0x4E414B484F4E  # "NAKHON"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """The packaged migrations, in version order."""
    found = []
    for entry in resources.files("nakhon.storage").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    return found


def migrate(dsn: str) -> list[Migration]:
    """Apply the migrations the database lacks; return those applied now."""
    applied_now: list[Migration] = []
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute(
            """CREATE TABLE IF NOT EXISTS nakhon_schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {row[0] for row in conn.execute("SELECT version FROM nakhon_schema_migrations")}
        for mig in available_migrations():
            if mig.version in done:
                continue
            log.info("applying migration %04d_%s", mig.version, mig.name)
            conn.execute(sql.SQL(mig.sql))  # packaged with Nakhon: trusted SQL
            conn.execute(
                "INSERT INTO nakhon_schema_migrations (version, name) VALUES (%s, %s)",
                (mig.version, mig.name),
            )
            applied_now.append(mig)
    return applied_now


class SchemaNotReady(psycopg.OperationalError):
    """The database answers but lacks migrations this code needs: ``nakhon migrate`` has not run.

    An ``OperationalError``: to a service it is the database not being ready
    yet, waited for like a database that does not answer.
    """


def required_version() -> int:
    """The schema version this code needs: its newest packaged migration."""
    return available_migrations()[-1].version


async def check_schema(conn: psycopg.AsyncConnection[tuple[object, ...]], version: int) -> None:
    """Return when the schema is at ``version`` or later; raise :class:`SchemaNotReady` if not.

    Services call it instead of migrating: they connect as roles without DDL
    rights, and the migrations are their own step, run as the owner. Before
    the first migration there is no ``nakhon_schema_migrations``; before
    migration 0005 the service's role may not read it: both mean "not yet".
    """
    try:
        async with conn.transaction():
            row = await (
                await conn.execute("SELECT max(version) FROM nakhon_schema_migrations")
            ).fetchone()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege) as exc:
        raise SchemaNotReady(f"no readable schema ({exc.sqlstate}): run nakhon migrate") from exc
    found = row[0] if row and isinstance(row[0], int) else 0
    if found < version:
        raise SchemaNotReady(
            f"schema at version {found:04d}, this code needs {version:04d}: run nakhon migrate"
        )


async def require_schema(dsn: str, version: int | None = None) -> None:
    """:func:`check_schema` on a connection of its own (for a service's start-up wait)."""
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as conn:
        await check_schema(conn, required_version() if version is None else version)


_LICENSE = "SELECT current_setting('timescaledb.license', true)"


def _edition(row: tuple[object, ...] | None) -> str:
    return "community" if row and row[0] == "timescale" else "apache"


def timescaledb_edition(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    """``community`` or ``apache``: which TimescaleDB the server runs."""
    return _edition(conn.execute(_LICENSE).fetchone())


async def detect_edition(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> str:
    """:func:`timescaledb_edition` on an async connection."""
    return _edition(await (await conn.execute(_LICENSE)).fetchone())
