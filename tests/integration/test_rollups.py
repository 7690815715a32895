"""Rollups through the real database: they equal SQL over raw readings, late data included."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from nakhon.storage.migrate import migrate, timescaledb_edition
from nakhon.storage.rollups import ApacheRollupRefresher, RefreshReport
from tests.integration.conftest import Stack

_RAW = """
SELECT time_bucket(%(width)s, time) AS bucket, sensor_id, metric,
       avg(value), min(value), max(value), sum(value), count(*), last(value, time)
FROM readings WHERE sensor_id LIKE %(prefix)s GROUP BY 1, 2, 3 ORDER BY 2, 3, 1
"""
_ROLLUP = """
SELECT bucket, sensor_id, metric, avg, min, max, sum, count, last
FROM {table} WHERE sensor_id LIKE %(prefix)s ORDER BY 2, 3, 1
"""


@pytest.fixture(scope="module")
def dsn(stack: Stack) -> Iterator[str]:
    migrate(stack.dsn)
    with psycopg.connect(stack.dsn) as conn:
        if timescaledb_edition(conn) != "apache":
            pytest.skip("the Apache-edition refresher only; Community uses continuous aggregates")
    yield stack.dsn


def refresh(dsn: str) -> RefreshReport:
    async def once() -> RefreshReport:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for _ in range(50):  # another maintainer may hold the refresh lock for a moment
                report = await ApacheRollupRefresher(conn).refresh()
                if not report.skipped:
                    return report
                await asyncio.sleep(0.2)
        raise AssertionError("the refresh lock stayed taken")

    return asyncio.run(once())


def insert(dsn: str, rows: list[tuple[datetime, str, str, float, str]]) -> None:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (time, sensor_id, metric, value, city)"
            " VALUES (%s, %s, %s, %s, %s)",
            rows,
        )


def rows_of(dsn: str, query: str, **params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return [tuple(r) for r in conn.execute(query, params).fetchall()]


def normalized(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows]


def assert_rollups_equal_raw(dsn: str, prefix: str) -> None:
    like = prefix + "%"
    for table, width in (
        ("nakhon_readings_1m_data", timedelta(minutes=1)),
        ("readings_1m", timedelta(minutes=1)),
        ("nakhon_readings_1h_data", timedelta(hours=1)),
        ("readings_1h", timedelta(hours=1)),
    ):
        raw = normalized(rows_of(dsn, _RAW, width=width, prefix=like))
        rolled = normalized(rows_of(dsn, _ROLLUP.format(table=table), prefix=like))
        assert rolled == raw, table


def series_rows(
    prefix: str, start: datetime, minutes: int
) -> list[tuple[datetime, str, str, float, str]]:
    city = prefix.rstrip("-")
    out = []
    for i in range(minutes * 3):  # every 20 s, two sensors, two metrics
        t = start + timedelta(seconds=20 * i + 3)
        for s in range(2):
            out.append((t, f"{prefix}{s}", "pm2_5", float((i * 7 + s) % 50), city))
            out.append((t, f"{prefix}{s}", "temperature", 25 + (i % 10) / 3, city))
    return out


def last_complete_hour_end() -> datetime:
    """The hour boundary the rollup watermark has surely passed.

    The refresh holds its watermark 5 minutes behind now, so in the first
    minutes of an hour the hour just ended is not yet materialized: step back
    10 minutes before flooring, or the test would fail at :00–:05 of every hour.
    """
    return (datetime.now(UTC) - timedelta(minutes=10)).replace(minute=0, second=0, microsecond=0)


def test_rollups_equal_sql_over_raw_readings(dsn: str) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}-"
    hour = last_complete_hour_end()
    start = hour - timedelta(hours=3)
    insert(dsn, series_rows(prefix, start, 150))
    refresh(dsn)
    assert_rollups_equal_raw(dsn, prefix)
    # The materialized tables hold them (not only the real-time tail).
    assert rows_of(
        dsn,
        "SELECT count(*) FROM nakhon_readings_1h_data WHERE sensor_id LIKE %(p)s",
        p=prefix + "%",
    ) == [(2 * 2 * 3,)]


def test_late_data_updates_both_rollups(dsn: str) -> None:
    prefix = f"l{uuid.uuid4().hex[:8]}-"
    hour = last_complete_hour_end()
    start = hour - timedelta(hours=2)
    insert(dsn, series_rows(prefix, start, 60))
    report = refresh(dsn)
    assert report.hour_until is not None and report.hour_until > start + timedelta(hours=1)
    before = rows_of(
        dsn,
        "SELECT count, max FROM nakhon_readings_1h_data WHERE sensor_id = %(s)s"
        " AND metric = 'pm2_5' AND bucket = %(b)s",
        s=f"{prefix}0",
        b=start,
    )
    assert before == [(180, 49.0)]

    # Late: minutes and hour already materialized; one new maximum, one new minute.
    insert(
        dsn,
        [
            (start + timedelta(minutes=10, seconds=1), f"{prefix}0", "pm2_5", 999.0, prefix[:-1]),
            (start + timedelta(minutes=59, seconds=59), f"{prefix}0", "pm2_5", 1.5, prefix[:-1]),
        ],
    )
    late = refresh(dsn)
    assert late.late_minutes >= 2 and late.late_hours >= 1
    assert_rollups_equal_raw(dsn, prefix)
    after = rows_of(
        dsn,
        "SELECT count, max, last FROM nakhon_readings_1h_data WHERE sensor_id = %(s)s"
        " AND metric = 'pm2_5' AND bucket = %(b)s",
        s=f"{prefix}0",
        b=start,
    )
    assert after == [(182, 999.0, 1.5)]


def test_deleted_readings_leave_the_rollups(dsn: str) -> None:
    prefix = f"d{uuid.uuid4().hex[:8]}-"
    start = last_complete_hour_end() - timedelta(hours=2)
    insert(dsn, series_rows(prefix, start, 30))
    refresh(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM readings WHERE sensor_id = %s", (f"{prefix}1",))
    refresh(dsn)
    assert_rollups_equal_raw(dsn, prefix)
    assert rows_of(
        dsn,
        "SELECT count(*) FROM nakhon_readings_1m_data WHERE sensor_id = %(s)s",
        s=f"{prefix}1",
    ) == [(0,)]
