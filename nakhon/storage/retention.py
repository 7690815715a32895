"""Retention: raw readings go after N days, their rollups much later.

Both editions drop whole chunks, never single rows: a chunk goes once all
of it is older than its table's horizon, so a chunk straddling the cutoff
stays until it is wholly due. That keeps deletes free (no dead tuples, no
vacuum) and means "older than N days" is a floor, never a ceiling.

Community edition: :func:`apply_retention_policies` installs TimescaleDB's
retention policies (and compression of raw chunks) and TimescaleDB's job
scheduler runs them; policies are the owner's to install, so ``nakhon
migrate`` does it (nakhon/storage/command.py). Apache edition: no policies
exist, so :func:`drop_expired_chunks` drops chunks on the schedule of ``nakhon
maintain``, through ``nakhon_drop_expired_chunks`` (migration 0005): only a
hypertable's owner may call ``drop_chunks``, and ``nakhon maintain`` connects
as ``nakhon_writer``, which owns nothing. Dropping raw chunks never touches the rollups: a
dropped chunk fires no trigger, so it does not invalidate its minutes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import AsyncConnection, sql

from nakhon.config import RetentionSettings

log = logging.getLogger(__name__)

#: Whole chunks older than ``keep`` before ``as_of`` (NULL: now; never later than now).
_DROP = "SELECT nakhon_drop_expired_chunks(%s, %s, %s)"


@dataclass(frozen=True, slots=True)
class RetentionTarget:
    """A table (as readers know it) and how long it keeps its rows."""

    relation: str
    keep: timedelta
    #: The hypertable holding the rows on the Apache edition (a view's data table).
    apache_hypertable: str


def retention_targets(settings: RetentionSettings) -> list[RetentionTarget]:
    return [
        RetentionTarget("readings", timedelta(days=settings.readings_days), "readings"),
        RetentionTarget("positions", timedelta(days=settings.positions_days), "positions"),
        RetentionTarget(
            "readings_1m", timedelta(days=settings.readings_1m_days), "nakhon_readings_1m_data"
        ),
        RetentionTarget(
            "readings_1h", timedelta(days=settings.readings_1h_days), "nakhon_readings_1h_data"
        ),
    ]


async def drop_expired_chunks(
    conn: AsyncConnection[tuple[object, ...]],
    targets: list[RetentionTarget],
    now: datetime | None = None,
) -> dict[str, int]:
    """Apache edition: drop the chunks wholly older than each horizon; chunks dropped per table."""
    dropped: dict[str, int] = {}
    for target in targets:
        row = await (
            await conn.execute(_DROP, (target.apache_hypertable, target.keep, now))
        ).fetchone()
        dropped[target.relation] = int(row[0]) if row else 0  # type: ignore[call-overload]
    if any(dropped.values()):
        log.info("dropped expired chunks: %s", dropped)
    return dropped


#: Compression of raw tables on the Community edition. The unique keys'
#: columns must be segment-by or order-by columns for compressed chunks to
#: keep enforcing them (and late data, which lands there, to stay idempotent).
_COMPRESSION = {
    "readings": ("sensor_id, metric", "time DESC"),
    "positions": ("vehicle_id", "time DESC"),
}


async def apply_retention_policies(
    conn: AsyncConnection[tuple[object, ...]],
    targets: list[RetentionTarget],
    compress_after: timedelta,
) -> None:
    """Community edition: (re)install compression and retention policies from the settings.

    A policy is removed and added again so changed settings take effect;
    TimescaleDB's ``if_not_exists`` would silently keep the old interval.
    """
    for table, (segment_by, order_by) in _COMPRESSION.items():
        enabled = await (
            await conn.execute(
                "SELECT compression_enabled FROM timescaledb_information.hypertables"
                " WHERE hypertable_name = %s",
                (table,),
            )
        ).fetchone()
        if enabled and not enabled[0]:
            # Options cannot change once chunks are compressed: set them once.
            await conn.execute(
                sql.SQL(
                    "ALTER TABLE {} SET (timescaledb.compress,"
                    " timescaledb.compress_segmentby = {}, timescaledb.compress_orderby = {})"
                ).format(sql.Identifier(table), sql.Literal(segment_by), sql.Literal(order_by))
            )
        await conn.execute("SELECT remove_compression_policy(%s, if_exists => true)", (table,))
        await conn.execute(
            "SELECT add_compression_policy(%s, compress_after => %s)", (table, compress_after)
        )
    for target in targets:
        await conn.execute(
            "SELECT remove_retention_policy(%s, if_exists => true)", (target.relation,)
        )
        await conn.execute(
            "SELECT add_retention_policy(%s, drop_after => %s)", (target.relation, target.keep)
        )
    log.info(
        "retention policies: %s; raw chunks compressed after %s",
        ", ".join(f"{t.relation} {t.keep.days} d" for t in targets),
        compress_after,
    )
