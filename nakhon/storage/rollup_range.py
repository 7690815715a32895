"""Bring the rollups up to date over a time range whose readings were rewritten.

``nakhon replay raw --overwrite`` updates stored values; the hourly and
per-minute rollups (``readings_1m``, ``readings_1h``) must follow. Each
edition has its own way, and both are already what ``nakhon maintain``
relies on:

- Community: ``refresh_continuous_aggregate`` over the buckets that hold the
  range (TimescaleDB re-aggregates only what its invalidation log says
  changed inside it). It cannot run in a transaction: the connection is
  autocommit.
- Apache: the readings' statement trigger (migration 0002) has logged every
  changed minute below the threshold; one :class:`ApacheRollupRefresher`
  pass re-aggregates them (and materializes what is due), so the range needs
  no argument. Rows above the threshold are aggregated on read anyway.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import AsyncConnection

from nakhon.storage.migrate import detect_edition
from nakhon.storage.rollups import ApacheRollupRefresher

#: The rollup views and their bucket widths, finest first (the hourly one is
#: built from the minutes on Apache, so its refresh must come second).
_VIEWS = (("readings_1m", timedelta(minutes=1)), ("readings_1h", timedelta(hours=1)))


#: Apache: tries of the refresh while another one (a maintainer's) holds its lock.
_LOCK_ATTEMPTS = 30
_LOCK_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class RangeRefresh:
    """What :func:`refresh_rollups` did, as one line for the operator."""

    edition: str
    first: datetime
    last: datetime
    detail: str

    def line(self) -> str:
        span = f"{self.first:%Y-%m-%dT%H:%M:%SZ} .. {self.last:%Y-%m-%dT%H:%M:%SZ}"
        return f"rollups readings_1m, readings_1h over {span}: {self.detail}"


def _floor(when: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=when.tzinfo)
    return when - (when - epoch) % width


async def refresh_rollups(dsn: str, first: datetime, last: datetime) -> RangeRefresh:
    """Refresh both rollups over the buckets holding ``[first, last]``."""
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        edition = await detect_edition(conn)
        if edition == "community":
            for view, width in _VIEWS:
                await conn.execute(
                    "CALL refresh_continuous_aggregate(%s, %s, %s)",
                    (view, _floor(first, width), _floor(last, width) + width),
                )
            return RangeRefresh(edition, first, last, "continuous aggregates refreshed")
        refresher = ApacheRollupRefresher(conn)
        report = await refresher.refresh()
        for _ in range(_LOCK_ATTEMPTS - 1):
            if not report.skipped:
                break
            # `nakhon maintain` is refreshing: its passes take seconds; wait for it.
            await asyncio.sleep(_LOCK_WAIT_S)
            report = await refresher.refresh()
        if report.skipped:
            detail = (
                "a maintainer's refresh held the lock for 15 s; the changed minutes are logged and "
                "`nakhon maintain` re-aggregates them on its next pass"
            )
        else:
            detail = (
                f"Apache edition refresh, {report.late_minutes:,} changed minute(s) and "
                f"{report.late_hours:,} hour(s) re-aggregated"
            )
        return RangeRefresh(edition, first, last, detail)
