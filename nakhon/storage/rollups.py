"""The 1-minute and 1-hour rollups of ``readings`` on both TimescaleDB editions.

Both editions expose ``readings_1m`` and ``readings_1h`` with the columns
``bucket, sensor_id, metric, city, avg, min, max, sum, count, last``, real
time (readings newer than the last refresh are aggregated on read).

Community edition: they are continuous aggregates; :func:`apply_refresh_policies`
gives them refresh policies and TimescaleDB does the rest.

Apache edition: :class:`ApacheRollupRefresher` keeps the materialized tables
``nakhon_readings_1m_data`` / ``nakhon_readings_1h_data`` behind the views
(migration 0002), incrementally, late data included. It works like
TimescaleDB's own continuous aggregates, with an *invalidation threshold*:

1. **Raise the threshold.** Raw rows with ``time < threshold`` are either in
   the materialized minutes or logged in ``nakhon_rollup_invalidations`` as
   (sensor, minute) pairs by a statement-level trigger on ``readings`` (one
   query per written batch, not per row). Raising it takes an exclusive
   advisory lock that each writing statement holds in shared mode until its
   transaction ends, so the raise waits for every writer that compared its
   rows with the *old* threshold; every later statement sees the new one.
   Without that wait a batch in flight could slip below the threshold
   unlogged and after the aggregation's snapshot, and be missed forever.
2. **Materialize fresh minutes** ``[minute_until, threshold)`` from raw
   readings, in steps of one transaction each, moving ``minute_until``.
3. **Re-aggregate invalidated minutes** of single sensors (late data,
   updates, deletes): delete their minute rows, aggregate them again from
   raw, and log the hours they fall in for step 5.
4. **Materialize complete hours** ``[hour_until, hour of minute_until)``
   from the minute rows.
5. **Re-aggregate invalidated hours** of single sensors from the minute rows.

Every step is idempotent (delete, then insert) and records its progress in
the same transaction as its rows, so a crash at any point only repeats work.
A session-level advisory lock lets several ``nakhon maintain`` run (no
single instance is assumed) while only one refreshes at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import AsyncConnection, sql

log = logging.getLogger(__name__)

#: Held in shared mode by every statement that writes ``readings`` (the
#: trigger of migration 0002 names the same number), exclusively by step 1.
ROLLUP_LOCK_KEY = 0x4E414B484F4E + 1
#: Held for a whole refresh so concurrent maintainers take turns.
REFRESH_LOCK_KEY = 0x4E414B484F4E + 2

#: Raw readings aggregated per transaction when catching up.
MATERIALIZE_STEP = timedelta(hours=1)
#: Invalidated (sensor, bucket) pairs handled per transaction.
INVALIDATION_BATCH = 20_000

_ADVANCE = """
UPDATE nakhon_rollup_state
SET threshold = greatest(threshold, time_bucket(INTERVAL '1 minute', %(until)s::timestamptz))
"""

_INSERT_MINUTES = """
INSERT INTO nakhon_readings_1m_data
    (bucket, sensor_id, metric, city, avg, min, max, sum, count, last)
SELECT time_bucket(INTERVAL '1 minute', time), sensor_id, metric, city,
       avg(value), min(value), max(value), sum(value), count(*), last(value, time)
FROM readings
WHERE time >= %(lo)s AND time < %(hi)s
GROUP BY 1, sensor_id, metric, city
"""

_INSERT_HOURS = """
INSERT INTO nakhon_readings_1h_data
    (bucket, sensor_id, metric, city, avg, min, max, sum, count, last)
SELECT time_bucket(INTERVAL '1 hour', bucket), sensor_id, metric, city,
       sum(sum) / sum(count), min(min), max(max), sum(sum), sum(count), last(last, bucket)
FROM nakhon_readings_1m_data
WHERE bucket >= %(lo)s AND bucket < %(hi)s
GROUP BY 1, sensor_id, metric, city
"""

_REAGGREGATE_MINUTES = """
INSERT INTO nakhon_readings_1m_data
    (bucket, sensor_id, metric, city, avg, min, max, sum, count, last)
SELECT p.bucket, r.sensor_id, r.metric, r.city,
       avg(r.value), min(r.value), max(r.value), sum(r.value), count(*), last(r.value, r.time)
FROM unnest(%(sensors)s::text[], %(buckets)s::timestamptz[]) AS p(sensor_id, bucket)
JOIN readings r ON r.sensor_id = p.sensor_id
               AND r.time >= p.bucket AND r.time < p.bucket + INTERVAL '1 minute'
GROUP BY p.bucket, r.sensor_id, r.metric, r.city
"""

_REAGGREGATE_HOURS = """
INSERT INTO nakhon_readings_1h_data
    (bucket, sensor_id, metric, city, avg, min, max, sum, count, last)
SELECT p.bucket, m.sensor_id, m.metric, m.city,
       sum(m.sum) / sum(m.count), min(m.min), max(m.max), sum(m.sum), sum(m.count),
       last(m.last, m.bucket)
FROM unnest(%(sensors)s::text[], %(buckets)s::timestamptz[]) AS p(sensor_id, bucket)
JOIN nakhon_readings_1m_data m ON m.sensor_id = p.sensor_id
               AND m.bucket >= p.bucket AND m.bucket < p.bucket + INTERVAL '1 hour'
GROUP BY p.bucket, m.sensor_id, m.metric, m.city
"""

_LOG_HOURS = """
INSERT INTO nakhon_rollup_invalidations_1h (sensor_id, bucket)
SELECT DISTINCT sensor_id, time_bucket(INTERVAL '1 hour', bucket)
FROM unnest(%(sensors)s::text[], %(buckets)s::timestamptz[]) AS p(sensor_id, bucket)
"""


@dataclass(frozen=True, slots=True)
class _Level:
    """One rollup level's tables and watermarks (fixed names, never user input)."""

    width: timedelta
    data: sql.Identifier
    #: The watermark below which this level is materialized ...
    until: sql.Identifier
    #: ... and the one below which its source is final.
    source_until: sql.Identifier
    first_source_bucket: sql.SQL
    source_time: sql.Identifier
    insert: sql.SQL
    log: sql.Identifier
    rebuild: sql.SQL


_MINUTE = _Level(
    width=timedelta(minutes=1),
    data=sql.Identifier("nakhon_readings_1m_data"),
    until=sql.Identifier("minute_until"),
    source_until=sql.Identifier("threshold"),
    first_source_bucket=sql.SQL("SELECT time_bucket(INTERVAL '1 minute', min(time)) FROM readings"),
    source_time=sql.Identifier("time"),
    insert=sql.SQL(_INSERT_MINUTES),
    log=sql.Identifier("nakhon_rollup_invalidations"),
    rebuild=sql.SQL(_REAGGREGATE_MINUTES),
)
_HOUR = _Level(
    width=timedelta(hours=1),
    data=sql.Identifier("nakhon_readings_1h_data"),
    until=sql.Identifier("hour_until"),
    source_until=sql.Identifier("minute_until"),
    first_source_bucket=sql.SQL(
        "SELECT time_bucket(INTERVAL '1 hour', min(bucket)) FROM nakhon_readings_1m_data"
    ),
    source_time=sql.Identifier("bucket"),
    insert=sql.SQL(_INSERT_HOURS),
    log=sql.Identifier("nakhon_rollup_invalidations_1h"),
    rebuild=sql.SQL(_REAGGREGATE_HOURS),
)

# The target is the source's watermark; the next bucket is the first one
# holding source rows between this level's watermark and the target, so a
# catch-up skips empty ranges. '-infinity' (the initial watermarks) does not
# fit a Python datetime: it is read as NULL.
_STATE = sql.SQL(
    "SELECT nullif(time_bucket({width}, s.{source_until}), '-infinity'),"
    " ({first} WHERE {time} >= s.{until} AND {time} < time_bucket({width}, s.{source_until}))"
    " FROM nakhon_rollup_state s"
)
_TAKE = sql.SQL(
    "WITH taken AS (DELETE FROM {log} WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM {log} LIMIT {limit})) RETURNING sensor_id, bucket)"
    " SELECT DISTINCT sensor_id, bucket, bucket < (SELECT {until} FROM nakhon_rollup_state)"
    " FROM taken"
)
_DELETE_PAIRS = sql.SQL(
    "DELETE FROM {data} d"
    " USING unnest(%(sensors)s::text[], %(buckets)s::timestamptz[]) AS p(sensor_id, bucket)"
    " WHERE d.sensor_id = p.sensor_id AND d.bucket = p.bucket"
)


@dataclass(slots=True)
class RefreshReport:
    """What one refresh did; logged by ``nakhon maintain``."""

    threshold: datetime | None = None
    minute_until: datetime | None = None
    hour_until: datetime | None = None
    threshold_raised: bool = False
    minute_rows: int = 0
    hour_rows: int = 0
    late_minutes: int = 0
    late_hours: int = 0
    skipped: bool = False


class ApacheRollupRefresher:
    """Keeps ``readings_1m`` / ``readings_1h`` current on the Apache edition.

    ``settle`` keeps the threshold that far behind ``now()``: the newest
    minutes still receive readings (gateways batch, LoRaWAN uplinks queue),
    and materializing them early would turn those into invalidations, which
    the views show only after the next refresh. Above the threshold the
    views aggregate raw readings on read, so in-time data is never stale.
    """

    def __init__(
        self,
        conn: AsyncConnection[tuple[object, ...]],
        *,
        settle: timedelta = timedelta(minutes=5),
        lock_timeout: timedelta = timedelta(seconds=5),
    ) -> None:
        if not conn.autocommit:
            raise ValueError("the refresher needs an autocommit connection")
        self._conn = conn
        self._settle = settle
        self._lock_timeout = lock_timeout

    async def refresh(self, until: datetime | None = None) -> RefreshReport:
        """Run steps 1–5 once; ``until`` overrides ``now() - settle`` (tests, backfills)."""
        report = RefreshReport()
        got = await self._scalar("SELECT pg_try_advisory_lock(%s)", REFRESH_LOCK_KEY)
        if not got:
            report.skipped = True
            return report
        try:
            report.threshold_raised = await self._raise_threshold(until)
            report.minute_rows = await self._materialize(_MINUTE)
            report.late_minutes = await self._reaggregate(_MINUTE)
            report.hour_rows = await self._materialize(_HOUR)
            report.late_hours = await self._reaggregate(_HOUR)
            cur = await self._conn.execute(
                "UPDATE nakhon_rollup_state SET refreshed_at = now()"
                " RETURNING nullif(threshold, '-infinity'), nullif(minute_until, '-infinity'),"
                " nullif(hour_until, '-infinity')"
            )
            state = await cur.fetchone()
            if state:
                report.threshold, report.minute_until, report.hour_until = (
                    _as_datetime(state[0]),
                    _as_datetime(state[1]),
                    _as_datetime(state[2]),
                )
        finally:
            await self._conn.execute("SELECT pg_advisory_unlock(%s)", (REFRESH_LOCK_KEY,))
        return report

    async def _scalar(self, query: str, *params: object) -> object:
        row = await (await self._conn.execute(query, params or None)).fetchone()
        return row[0] if row else None

    async def _raise_threshold(self, until: datetime | None) -> bool:
        """Step 1; False when writers held the lock past ``lock_timeout`` (retried next time)."""
        target = until
        if target is None:
            now = await self._scalar("SELECT now()")
            target = _as_datetime(now)
            assert target is not None
            target -= self._settle
        try:
            async with self._conn.transaction():
                ms = str(int(self._lock_timeout.total_seconds() * 1000))
                await self._conn.execute("SELECT set_config('lock_timeout', %s, true)", (ms,))
                await self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK_KEY,))
                await self._conn.execute(_ADVANCE, {"until": target})
        except psycopg.errors.LockNotAvailable:
            log.warning("writers held the rollup lock past %s; threshold kept", self._lock_timeout)
            return False
        return True

    async def _materialize(self, level: _Level) -> int:
        """Steps 2 and 4: aggregate the range between the level's and its source's watermark."""
        query = _STATE.format(
            until=level.until,
            first=level.first_source_bucket,
            time=level.source_time,
            width=sql.Literal(level.width),
            source_until=level.source_until,
        )
        set_until = sql.SQL("UPDATE nakhon_rollup_state SET {} = %s").format(level.until)
        delete = sql.SQL("DELETE FROM {} WHERE bucket >= %s AND bucket < %s").format(level.data)
        rows = 0
        while True:
            async with self._conn.transaction():
                state = await (await self._conn.execute(query)).fetchone()
                assert state is not None
                target, lo = _as_datetime(state[0]), _as_datetime(state[1])
                if target is None:  # the source has no watermark yet
                    return rows
                if lo is None:  # no source rows left below the target
                    await self._conn.execute(set_until, (target,))
                    return rows
                hi = min(target, lo + MATERIALIZE_STEP)
                await self._conn.execute(delete, (lo, hi))
                cur = await self._conn.execute(level.insert, {"lo": lo, "hi": hi})
                rows += max(cur.rowcount, 0)
                await self._conn.execute(set_until, (hi,))

    async def _reaggregate(self, level: _Level) -> int:
        """Steps 3 and 5: rebuild the logged (sensor, bucket) pairs, batch by batch.

        Pairs at or above the level's watermark are only dropped from the log:
        the next fresh materialization reads their rows anyway.
        """
        take = _TAKE.format(log=level.log, limit=sql.Literal(INVALIDATION_BATCH), until=level.until)
        delete = _DELETE_PAIRS.format(data=level.data)
        done = 0
        while True:
            async with self._conn.transaction():
                taken = await (await self._conn.execute(take)).fetchall()
                if not taken:
                    return done
                due = [(sensor, bucket) for sensor, bucket, below in taken if below]
                if not due:
                    continue
                params = {"sensors": [p[0] for p in due], "buckets": [p[1] for p in due]}
                await self._conn.execute(delete, params)
                await self._conn.execute(level.rebuild, params)
                if level is _MINUTE:
                    await self._conn.execute(_LOG_HOURS, params)
                done += len(due)


def _as_datetime(value: object) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    raise TypeError(f"expected a timestamptz, got {value!r}")


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """A continuous aggregate's refresh policy (Community edition)."""

    view: str
    start_offset: timedelta
    end_offset: timedelta
    schedule_interval: timedelta


def refresh_policies(raw_retention: timedelta) -> list[RefreshPolicy]:
    """The policies ``nakhon maintain`` installs on the Community edition.

    The refresh window reaches back as far as raw readings live, less a day:
    TimescaleDB re-aggregates only invalidated ranges inside it, so a wide
    window is cheap, and late data inside it is picked up. It must not reach
    chunks the raw retention policy may already have dropped, or a refresh
    would erase their rollups (TimescaleDB docs, "Data retention with
    continuous aggregates"). The end offset keeps the current bucket out;
    ``materialized_only = false`` serves it from raw readings meanwhile.
    """
    window = max(raw_retention - timedelta(days=1), timedelta(hours=2))
    return [
        RefreshPolicy("readings_1m", window, timedelta(minutes=1), timedelta(minutes=1)),
        RefreshPolicy("readings_1h", window, timedelta(hours=1), timedelta(minutes=10)),
    ]


async def apply_refresh_policies(
    conn: AsyncConnection[tuple[object, ...]], policies: list[RefreshPolicy]
) -> None:
    """Community edition: (re)install the refresh policies so changed settings take effect."""
    for p in policies:
        await conn.execute(
            "SELECT remove_continuous_aggregate_policy(%s, if_exists => true)", (p.view,)
        )
        await conn.execute(
            "SELECT add_continuous_aggregate_policy(%s, start_offset => %s,"
            " end_offset => %s, schedule_interval => %s)",
            (p.view, p.start_offset, p.end_offset, p.schedule_interval),
        )
        log.info(
            "refresh policy on %s: window [now - %s, now - %s], every %s",
            p.view,
            p.start_offset,
            p.end_offset,
            p.schedule_interval,
        )
