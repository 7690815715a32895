"""Retention drops the chunks that are due and nothing else.

The checks run on a scratch hypertable shaped like ``readings``: dropping
chunks of the shared ``readings`` would take other tests' data with it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from nakhon.config import RetentionSettings
from nakhon.storage.migrate import migrate, timescaledb_edition
from nakhon.storage.retention import RetentionTarget, drop_expired_chunks, retention_targets
from tests.integration.conftest import Stack


@pytest.fixture
def scratch(stack: Stack) -> Iterator[tuple[str, str]]:
    migrate(stack.dsn)
    name = f"t_retention_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        if timescaledb_edition(conn) != "apache":
            pytest.skip("Community edition runs retention as TimescaleDB policies")
        conn.execute(
            psycopg.sql.SQL("CREATE TABLE {} (LIKE readings INCLUDING ALL)").format(
                psycopg.sql.Identifier(name)
            )
        )
        conn.execute(
            "SELECT create_hypertable(%s, 'time', chunk_time_interval => INTERVAL '1 day')", (name,)
        )
    yield stack.dsn, name
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP TABLE {}").format(psycopg.sql.Identifier(name)))


def drop(dsn: str, targets: list[RetentionTarget], now: datetime) -> dict[str, int]:
    async def run() -> dict[str, int]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await drop_expired_chunks(conn, targets, now)

    return asyncio.run(run())


def test_drops_due_chunks_and_keeps_the_rest(scratch: tuple[str, str]) -> None:
    dsn, table = scratch
    now = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
    ages = [40, 31, 30.6, 30.4, 29, 1, 0.01]
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            psycopg.sql.SQL(
                "INSERT INTO {} (time, sensor_id, metric, value, city)"
                " VALUES (%s, 's', 'm', 1, 'c')"
            ).format(psycopg.sql.Identifier(table)),
            [(now - timedelta(days=a),) for a in ages],
        )
    dropped = drop(dsn, [RetentionTarget("scratch", timedelta(days=30), table)], now)
    # 1-day chunks: 40 days old alone, 31 and 30.6 days old share 15 May; cutoff 16 May 12:00.
    assert dropped == {"scratch": 2}
    with psycopg.connect(dsn) as conn:
        kept = conn.execute(
            psycopg.sql.SQL("SELECT time FROM {} ORDER BY time").format(
                psycopg.sql.Identifier(table)
            )
        ).fetchall()
    # 30.4 days old shares its chunk with rows younger than 30 days: kept until wholly due.
    assert [now - r[0] for r in kept] == [timedelta(days=a) for a in (30.4, 29, 1, 0.01)]
    assert drop(dsn, [RetentionTarget("scratch", timedelta(days=30), table)], now) == {"scratch": 0}


def test_targets_follow_the_settings(stack: Stack) -> None:
    targets = {t.relation: t for t in retention_targets(RetentionSettings(readings_days=7))}
    assert targets["readings"].keep == timedelta(days=7)
    assert targets["readings_1m"].apache_hypertable == "nakhon_readings_1m_data"
    assert targets["readings_1h"].keep > targets["readings_1m"].keep > targets["readings"].keep


def test_real_tables_with_long_horizons_lose_nothing(stack: Stack) -> None:
    migrate(stack.dsn)
    with psycopg.connect(stack.dsn) as conn:
        if timescaledb_edition(conn) != "apache":
            pytest.skip("Apache edition only")
    far = RetentionSettings(
        readings_days=36500, positions_days=36500, readings_1m_days=36500, readings_1h_days=36500
    )
    dropped = drop(stack.dsn, retention_targets(far), datetime.now(UTC))
    assert dropped == {"readings": 0, "positions": 0, "readings_1m": 0, "readings_1h": 0}
