"""Database roles through the real database: each service holds its job's rights, no more.

The DSNs are those ``make up`` generated (``.nakhon/secrets/local.env``):
the processor's and maintain's log in as ``nakhon_writer``, the API's as
``nakhon_reader``, ``NAKHON_DB_DSN`` as ``nakhon_owner``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from nakhon.config import load_settings
from nakhon.domain.records import Reading
from nakhon.local_stack import LOCAL_STACK
from nakhon.storage.migrate import (
    SchemaNotReady,
    check_schema,
    migrate,
    required_version,
    timescaledb_edition,
)
from nakhon.storage.writer import ReadingWriter
from tests.integration.conftest import Stack
from tools.sandbox import PipelineNamespace, wait_until

#: Statements the reader must never get through (grants, not a session setting).
READER_DENIED = [
    "INSERT INTO readings (time, sensor_id, metric, value, city)"
    " VALUES (now(), 'roles-test', 'pm2_5', 1, 'bangkok')",
    "UPDATE sensors SET name = 'x' WHERE false",
    "DELETE FROM readings WHERE false",
    "DELETE FROM api_keys WHERE false",
    "UPDATE api_keys SET revoked_at = now() WHERE false",
    "INSERT INTO cities (city_id, name_en, name_th, province) VALUES ('x', 'x', 'x', 'x')",
    "TRUNCATE cities",
    "CREATE TABLE roles_test (x int)",
    "CREATE TEMP TABLE roles_test (x int)",
    "CREATE VIEW roles_test AS SELECT 1",
    "CREATE FUNCTION roles_test() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "ALTER TABLE readings ADD COLUMN x int",
    "DROP TABLE cities",
    "SELECT nakhon_drop_expired_chunks('readings', interval '1 day', NULL)",
    "SELECT count(*) FROM drop_chunks('readings', older_than => now() - interval '100 years')",
]

#: DDL and deletes the writer must never get through.
WRITER_DENIED = [
    "ALTER TABLE readings ADD COLUMN x int",
    "ALTER TABLE sensors DROP COLUMN name",
    "DROP TABLE positions",
    "DROP VIEW readings_1m",
    "CREATE TABLE roles_test (x int)",
    "CREATE INDEX roles_test_idx ON readings (value)",
    "TRUNCATE readings",
    "DELETE FROM readings WHERE false",
    "DELETE FROM sensors WHERE false",
    "UPDATE readings SET value = 0 WHERE false",
    "UPDATE sensors SET city = 'x' WHERE false",
    "INSERT INTO cities (city_id, name_en, name_th, province) VALUES ('x', 'x', 'x', 'x')",
    "SELECT count(*) FROM api_keys",
    "SELECT count(*) FROM drop_chunks('readings', older_than => now() - interval '100 years')",
    "ALTER TABLE readings OWNER TO nakhon_writer",
]


def _denied(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def _current_user(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT current_user").fetchone()
        assert row is not None
        return str(row[0])


def test_each_service_logs_in_as_its_role(stack: Stack) -> None:
    db = load_settings().db
    assert _current_user(db.dsn.get_secret_value()) == "nakhon_owner"
    assert _current_user(db.service_dsn("processor")) == "nakhon_writer"
    assert _current_user(db.service_dsn("maintain")) == "nakhon_writer"
    assert _current_user(db.service_dsn("api")) == "nakhon_reader"


def test_no_service_role_is_a_superuser_or_may_make_roles(stack: Stack) -> None:
    with psycopg.connect(stack.reader_dsn) as conn:
        rows = conn.execute(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname IN ('nakhon_owner', 'nakhon_writer', 'nakhon_reader')"
        ).fetchall()
        legacy = conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'nakhon'").fetchone()
    assert sorted(r[0] for r in rows) == ["nakhon_owner", "nakhon_reader", "nakhon_writer"]
    assert all(not any(r[1:]) for r in rows), rows
    assert legacy == (0,), "the old shared login nakhon/nakhon is gone"


def test_the_superuser_is_not_reachable_over_tcp(stack: Stack) -> None:
    with pytest.raises(psycopg.OperationalError, match="rejects connection"):
        psycopg.connect(LOCAL_STACK.dsn("postgres"), connect_timeout=5)


@pytest.mark.parametrize("statement", READER_DENIED)
def test_the_reader_cannot_write_or_create(stack: Stack, statement: str) -> None:
    _denied(stack.reader_dsn, statement)


@pytest.mark.parametrize("statement", WRITER_DENIED)
def test_the_writer_cannot_alter_the_schema_or_delete(stack: Stack, statement: str) -> None:
    _denied(stack.writer_dsn, statement)


def test_the_reader_reads_every_table_and_those_migrations_add_later(stack: Stack) -> None:
    name = f"roles_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.dsn, autocommit=True) as owner:
        owner.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(name)))
    try:
        with psycopg.connect(stack.reader_dsn) as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'p')"
                ).fetchall()
            ]
            assert {"readings", "readings_1m", "sensors", "api_keys", name} <= set(tables)
            for table in tables:
                conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier(table)))
    finally:
        with psycopg.connect(stack.dsn, autocommit=True) as owner:
            owner.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


def test_only_the_owner_runs_migrations(stack: Stack) -> None:
    migrate(stack.dsn)  # nothing left to apply, and allowed
    for dsn in (stack.writer_dsn, stack.reader_dsn):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            migrate(dsn)


@pytest.fixture
def sensor_prefix(stack: Stack) -> Iterator[str]:
    prefix = f"roles-{uuid.uuid4().hex[:8]}-"
    yield prefix
    with psycopg.connect(stack.dsn) as conn:
        conn.execute("DELETE FROM readings WHERE sensor_id LIKE %s", (prefix + "%",))
        conn.execute("DELETE FROM positions WHERE vehicle_id LIKE %s", (prefix + "%",))
        conn.execute("DELETE FROM sensors WHERE sensor_id LIKE %s", (prefix + "%",))


def test_the_writer_stores_batches_and_upserts_sensors(stack: Stack, sensor_prefix: str) -> None:
    # Far back, in a chunk of its own: the writer's insert creates the chunk too.
    t0 = datetime(2024, 2, 3, 4, 5, tzinfo=UTC)
    sensor = sensor_prefix + "aq"
    batch = [
        Reading(t0 + timedelta(seconds=i), sensor, "pm2_5", 10.0 + i, "bangkok") for i in (0, 1)
    ]

    async def write() -> tuple[int, int]:
        async with ReadingWriter(stack.writer_dsn) as writer:
            first = await writer.write(batch, [])
            later = [Reading(t0 + timedelta(minutes=5), sensor, "pm2_5", 3.0, "bangkok")]
            await writer.write(later, [])
            again = await writer.write(batch, [])  # a replay: a no-op
            return first.readings_inserted, again.readings_inserted

    assert asyncio.run(write()) == (2, 0)
    with psycopg.connect(stack.dsn) as conn:
        row = conn.execute(
            "SELECT first_seen, last_seen FROM sensors WHERE sensor_id = %s", (sensor,)
        ).fetchone()
    assert row == (t0, t0 + timedelta(minutes=5))


def test_the_writer_refreshes_rollups_and_drops_only_expired_chunks(stack: Stack) -> None:
    from nakhon.storage.rollups import ApacheRollupRefresher

    with psycopg.connect(stack.dsn) as conn:
        if timescaledb_edition(conn) != "apache":
            pytest.skip("Apache edition only: Community runs TimescaleDB's policies")

    async def maintain() -> list[object]:
        async with await psycopg.AsyncConnection.connect(stack.writer_dsn, autocommit=True) as c:
            await ApacheRollupRefresher(c).refresh()
            results: list[object] = []
            for relation, keep in (
                ("readings", "36500 days"),
                ("nakhon_readings_1h_data", "1 day"),
            ):
                cur = await c.execute(
                    "SELECT nakhon_drop_expired_chunks(%s, %s::interval, %s)",
                    (relation, keep, datetime(1990, 1, 1, tzinfo=UTC)),
                )
                results.append((await cur.fetchone() or [None])[0])
            for bad, keep in (("api_keys", "1 day"), ("readings", "0 days")):
                try:
                    await c.execute(
                        "SELECT nakhon_drop_expired_chunks(%s, %s::interval, NULL)", (bad, keep)
                    )
                except psycopg.Error as exc:
                    results.append(type(exc).__name__)
            return results

    assert asyncio.run(maintain()) == [0, 0, "InsufficientPrivilege", "InvalidParameterValue"]


def test_services_wait_for_the_schema_they_need(stack: Stack) -> None:
    async def check(version: int) -> None:
        async with await psycopg.AsyncConnection.connect(stack.writer_dsn) as conn:
            await check_schema(conn, version)

    asyncio.run(check(required_version()))
    with pytest.raises(SchemaNotReady, match="run nakhon migrate"):
        asyncio.run(check(required_version() + 1))


async def test_a_processor_on_a_fresh_database_waits_for_nakhon_migrate(stack: Stack) -> None:
    """Started before the schema exists, the processor waits, unready; once migrated, it runs."""
    with stack.fresh_database() as fresh:
        ns = PipelineNamespace()
        await ns.prepare()
        try:
            processor = ns.processor()
            processor.env["NAKHON_DB_PROCESSOR_DSN"] = fresh.writer_dsn
            processor.start(wait_ready=False)
            wait_until(
                lambda: "the migrated schema is not reachable" in processor.log_path.read_text(),
                30,
                "the processor waiting for the schema",
            )
            assert not processor.ready()
            migrate(fresh.dsn)  # as the owner, like make up and compose's migrate service
            wait_until(processor.ready, 60, f"the processor ready (log: {processor.log_path})")
            # The grants came with the migrations: any deployment gets them.
            _denied(fresh.reader_dsn, READER_DENIED[0])
            _denied(fresh.writer_dsn, WRITER_DENIED[0])
        finally:
            ns.stop_all()
