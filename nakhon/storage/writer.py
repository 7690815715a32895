"""The batch writer: one processor batch becomes rows in one transaction.

Hot loop: binary ``COPY`` into a session-local staging table, then one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into the hypertable. The
unique key (sensor_id, metric, time) turns a replayed batch into a no-op, which
is what lets the processor commit Kafka offsets *after* the database commit
and still store every reading exactly once.

``sensors`` is maintained from the same staging table with one upsert per
batch (not one write per reading): a sensor seen for the first time is
registered with the city of its readings, and ``last_seen`` only moves forward.
That city is always a registered one (``cities``): enrichment dead-letters
readings of any other (``nakhon/processors/enrich.py``).

:class:`ReadingOverwriter` is the operator's exception to "first value
wins" (``nakhon replay raw --overwrite``): the same staging, then ``ON
CONFLICT DO UPDATE`` where the stored value differs. Only the schema owner
may run it: the processors' role ``nakhon_writer`` has no UPDATE on
``readings`` and must never need one.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Self

import psycopg

from nakhon.domain.records import Position, Reading

log = logging.getLogger(__name__)

_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS readings_stage (
    time timestamptz NOT NULL, sensor_id text NOT NULL, metric text NOT NULL,
    value double precision NOT NULL, city text NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS positions_stage (
    time timestamptz NOT NULL, vehicle_id text NOT NULL, lat double precision NOT NULL,
    lon double precision NOT NULL, speed_kmh double precision, heading double precision,
    city text NOT NULL
) ON COMMIT DELETE ROWS;
"""

_COPY_READINGS = (
    "COPY readings_stage (time, sensor_id, metric, value, city) FROM STDIN (FORMAT BINARY)"
)
_READING_TYPES = ["timestamptz", "text", "text", "float8", "text"]

_INSERT_READINGS = """
INSERT INTO readings (time, sensor_id, metric, value, city)
SELECT time, sensor_id, metric, value, city FROM readings_stage
ON CONFLICT ON CONSTRAINT readings_key DO NOTHING
"""

_COPY_POSITIONS = (
    "COPY positions_stage (time, vehicle_id, lat, lon, speed_kmh, heading, city)"
    " FROM STDIN (FORMAT BINARY)"
)
_POSITION_TYPES = ["timestamptz", "text", "float8", "float8", "float8", "float8", "text"]

_INSERT_POSITIONS = """
INSERT INTO positions (time, vehicle_id, lat, lon, speed_kmh, heading, city)
SELECT time, vehicle_id, lat, lon, speed_kmh, heading, city FROM positions_stage
ON CONFLICT ON CONSTRAINT positions_key DO NOTHING
"""

# Sorted by sensor_id so that concurrent processors lock sensors rows in the
# same order and cannot deadlock each other.
_UPSERT_SENSORS = """
INSERT INTO sensors (sensor_id, city, kind, first_seen, last_seen)
SELECT id, min(city), max(kind), min(time), max(time) FROM (
    SELECT sensor_id AS id, city, NULL::text AS kind, time FROM readings_stage
    UNION ALL
    SELECT vehicle_id, city, 'vehicle', time FROM positions_stage
) seen
GROUP BY id ORDER BY id
ON CONFLICT (sensor_id) DO UPDATE
SET last_seen = greatest(sensors.last_seen, excluded.last_seen),
    first_seen = least(sensors.first_seen, excluded.first_seen)
WHERE sensors.last_seen IS NULL OR sensors.last_seen < excluded.last_seen
   OR sensors.first_seen > excluded.first_seen
"""


# The overwriter's upserts: a staged row whose key is stored with another value
# updates it; one stored with the same values is left alone (not even a dead
# tuple). ``xmax = 0`` tells a row this statement inserted from one it updated.
# Sorted by key so that two overwriters lock rows in the same order.
_UPSERT_READINGS = """
WITH upserted AS (
    INSERT INTO readings AS r (time, sensor_id, metric, value, city)
    SELECT time, sensor_id, metric, value, city FROM readings_stage
    ORDER BY sensor_id, metric, time
    ON CONFLICT ON CONSTRAINT readings_key DO UPDATE
    SET value = excluded.value, city = excluded.city
    WHERE r.value IS DISTINCT FROM excluded.value OR r.city IS DISTINCT FROM excluded.city
    RETURNING (r.xmax = 0) AS inserted, r.time
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted),
       min(time), max(time)
FROM upserted
"""

_UPSERT_POSITIONS = """
WITH upserted AS (
    INSERT INTO positions AS p (time, vehicle_id, lat, lon, speed_kmh, heading, city)
    SELECT time, vehicle_id, lat, lon, speed_kmh, heading, city FROM positions_stage
    ORDER BY vehicle_id, time
    ON CONFLICT ON CONSTRAINT positions_key DO UPDATE
    SET lat = excluded.lat, lon = excluded.lon, speed_kmh = excluded.speed_kmh,
        heading = excluded.heading, city = excluded.city
    WHERE (p.lat, p.lon, p.speed_kmh, p.heading, p.city)
          IS DISTINCT FROM (excluded.lat, excluded.lon, excluded.speed_kmh, excluded.heading,
                            excluded.city)
    RETURNING (p.xmax = 0) AS inserted, p.time
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted),
       min(time), max(time)
FROM upserted
"""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a batch write did: rows new to the database (replays count zero)."""

    readings_inserted: int
    positions_inserted: int


class ReadingWriter:
    """Writes batches of readings and positions to TimescaleDB, idempotently.

    Owns one async connection; the caller decides when to retry (see
    :mod:`nakhon.storage.errors`).
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    async def connect(self) -> None:
        if self._conn is not None and not self._conn.closed:
            return
        # A fallback: an application_name in the DSN or PGAPPNAME wins (the
        # test sandbox names its processors' sessions apart from the stack's).
        self._conn = await psycopg.AsyncConnection.connect(
            self._dsn, fallback_application_name="nakhon-processor"
        )
        async with self._conn.transaction():
            await self._conn.execute(_STAGE_DDL)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def write(
        self, readings: Sequence[Reading], positions: Sequence[Position]
    ) -> WriteResult:
        """Write one batch in one transaction; raise psycopg.Error on failure."""
        if not readings and not positions:
            return WriteResult(0, 0)
        if self._conn is None or self._conn.closed:
            await self.connect()
        conn = self._conn
        assert conn is not None
        async with conn.transaction(), conn.cursor() as cur:
            await self._stage(cur, readings, positions)
            readings_inserted = positions_inserted = 0
            if readings:
                await cur.execute(_INSERT_READINGS)
                readings_inserted = cur.rowcount
            if positions:
                await cur.execute(_INSERT_POSITIONS)
                positions_inserted = cur.rowcount
            await cur.execute(_UPSERT_SENSORS)
        return WriteResult(readings_inserted, positions_inserted)

    async def _stage(
        self,
        cur: psycopg.AsyncCursor[tuple[object, ...]],
        readings: Sequence[Reading],
        positions: Sequence[Position],
    ) -> None:
        """COPY the batch into the session's staging tables (inside the caller's transaction)."""
        if readings:
            async with cur.copy(_COPY_READINGS) as copy:
                copy.set_types(_READING_TYPES)
                for r in readings:
                    await copy.write_row((r.time, r.sensor_id, r.metric, r.value, r.city))
        if positions:
            async with cur.copy(_COPY_POSITIONS) as copy:
                copy.set_types(_POSITION_TYPES)
                for p in positions:
                    await copy.write_row(
                        (p.time, p.vehicle_id, p.lat, p.lon, p.speed_kmh, p.heading, p.city)
                    )

    async def sensor_cities(self) -> dict[str, str]:
        """The registry: sensor id -> city (for the processor's enrichment snapshot)."""
        if self._conn is None or self._conn.closed:
            await self.connect()
        assert self._conn is not None
        async with self._conn.transaction(), self._conn.cursor() as cur:
            await cur.execute("SELECT sensor_id, city FROM sensors")
            return {str(sid): str(city) for sid, city in await cur.fetchall()}

    async def registered_cities(self) -> frozenset[str]:
        """The ids of the ``cities`` table: readings of any other city are dead-lettered."""
        if self._conn is None or self._conn.closed:
            await self.connect()
        assert self._conn is not None
        async with self._conn.transaction(), self._conn.cursor() as cur:
            await cur.execute("SELECT city_id FROM cities")
            return frozenset(str(city) for (city,) in await cur.fetchall())

    async def registry_entries(
        self, sensor_ids: Collection[str], cities: Collection[str]
    ) -> tuple[dict[str, str], frozenset[str]]:
        """Of these sensors and cities, those the registry has now (sensor -> city; cities)."""
        if self._conn is None or self._conn.closed:
            await self.connect()
        assert self._conn is not None
        async with self._conn.transaction(), self._conn.cursor() as cur:
            await cur.execute(
                "SELECT sensor_id, city FROM sensors WHERE sensor_id = ANY(%s)", (list(sensor_ids),)
            )
            sensors = {str(sid): str(city) for sid, city in await cur.fetchall()}
            await cur.execute("SELECT city_id FROM cities WHERE city_id = ANY(%s)", (list(cities),))
            found = frozenset(str(city) for (city,) in await cur.fetchall())
        return sensors, found

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass(frozen=True, slots=True)
class UpsertCounts:
    """What an overwriting upsert did to one table's rows of a batch."""

    inserted: int = 0
    changed: int = 0
    unchanged: int = 0
    #: The times of the rows inserted or changed (None when there are none).
    first: datetime | None = None
    last: datetime | None = None


@dataclass(frozen=True, slots=True)
class OverwriteResult:
    readings: UpsertCounts
    positions: UpsertCounts


class _Rollback(Exception):
    """Raised inside a dry run's transaction to roll it back."""


class ReadingOverwriter(ReadingWriter):
    """Writes batches that update stored values the batch reads differently.

    Connect it as the schema owner (``NAKHON_DB_DSN``): it UPDATEs
    ``readings`` and ``positions``, which the processors' role may not. A
    batch must not hold one key twice (the statement would update a row
    twice): de-duplicate before. ``dry_run`` runs the same statements and
    rolls the transaction back, so its counts are exactly what a real run
    would have done at that moment.
    """

    async def upsert(
        self, readings: Sequence[Reading], positions: Sequence[Position], dry_run: bool = False
    ) -> OverwriteResult:
        if not readings and not positions:
            return OverwriteResult(UpsertCounts(), UpsertCounts())
        if self._conn is None or self._conn.closed:
            await self.connect()
        conn = self._conn
        assert conn is not None
        result = OverwriteResult(UpsertCounts(), UpsertCounts())
        try:
            async with conn.transaction(), conn.cursor() as cur:
                await self._stage(cur, readings, positions)
                result = OverwriteResult(
                    await _upsert(cur, _UPSERT_READINGS, len(readings)),
                    await _upsert(cur, _UPSERT_POSITIONS, len(positions)),
                )
                await cur.execute(_UPSERT_SENSORS)
                if dry_run:
                    raise _Rollback
        except _Rollback:
            pass
        return result


async def _upsert(
    cur: psycopg.AsyncCursor[tuple[object, ...]], statement: str, staged: int
) -> UpsertCounts:
    if staged == 0:
        return UpsertCounts()
    await cur.execute(statement)
    row = await cur.fetchone()
    assert row is not None
    inserted, changed, first, last = row
    assert isinstance(inserted, int) and isinstance(changed, int)
    assert first is None or isinstance(first, datetime)
    assert last is None or isinstance(last, datetime)
    return UpsertCounts(inserted, changed, staged - inserted - changed, first, last)
