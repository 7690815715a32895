"""``nakhon maintain``: keeps rollups fresh and old data gone, on either edition.

Community edition: the work belongs to TimescaleDB's job scheduler and the
refresh, compression and retention policies ``nakhon migrate`` installs from
the settings (they are the tables' owner's to set; this service connects as
``nakhon_writer``, NAKHON_DB_MAINTAIN_DSN). Its loop only reports the jobs'
health (a failing job is logged at WARNING). Apache edition: no scheduler, so the loop refreshes the
rollups every ``refresh_interval_s`` (nakhon/storage/rollups.py) and drops
expired chunks every ``drop_interval_s`` (nakhon/storage/retention.py).

Several instances may run: refreshes take turns on an advisory lock and
``drop_chunks`` is idempotent. SIGTERM/SIGINT end the current step and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import psycopg
from psycopg import AsyncConnection

from nakhon.cli import configure_logging
from nakhon.config import MissingDsnError, RetentionSettings, load_settings
from nakhon.storage.migrate import detect_edition
from nakhon.storage.retention import (
    apply_retention_policies,
    drop_expired_chunks,
    retention_targets,
)
from nakhon.storage.rollups import (
    ApacheRollupRefresher,
    apply_refresh_policies,
    refresh_policies,
)

log = logging.getLogger("nakhon.maintain")

#: One pass of the service loop.
_Step = Callable[[AsyncConnection[tuple[object, ...]]], Awaitable[None]]

_JOB_HEALTH = """
SELECT j.proc_name, j.hypertable_name, s.last_run_status, s.total_failures
FROM timescaledb_information.jobs j
JOIN timescaledb_information.job_stats s USING (job_id)
WHERE j.proc_name IN ('policy_refresh_continuous_aggregate', 'policy_retention',
                      'policy_compression')
"""


async def install_community_policies(
    conn: AsyncConnection[tuple[object, ...]], settings: RetentionSettings
) -> None:
    """Community edition: (re)install the refresh, compression and retention policies.

    The tables' owner's work: ``nakhon migrate`` calls it, as ``nakhon_owner``.
    """
    targets = retention_targets(settings)
    raw = next(t.keep for t in targets if t.relation == "readings")
    await apply_refresh_policies(conn, refresh_policies(raw))
    await apply_retention_policies(conn, targets, timedelta(days=settings.compress_after_days))


class Maintainer:
    """The ``nakhon maintain`` loop for one database."""

    def __init__(self, dsn: str, settings: RetentionSettings) -> None:
        self._dsn = dsn
        self._settings = settings
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        async with await AsyncConnection.connect(self._dsn, autocommit=True) as conn:
            edition = await detect_edition(conn)
            log.info("TimescaleDB %s edition", edition)
            if edition == "community":
                await self._loop(conn, self._report_jobs, self._settings.refresh_interval_s)
            else:
                await self._loop_apache(conn)

    async def _report_jobs(self, conn: AsyncConnection[tuple[object, ...]]) -> None:
        for proc, table, status, failures in await (await conn.execute(_JOB_HEALTH)).fetchall():
            if status == "Failed":
                log.warning("%s on %s failed (%s failures in all)", proc, table, failures)

    async def _loop_apache(self, conn: AsyncConnection[tuple[object, ...]]) -> None:
        refresher = ApacheRollupRefresher(conn)
        targets = retention_targets(self._settings)
        next_drop = 0.0

        async def step(c: AsyncConnection[tuple[object, ...]]) -> None:
            nonlocal next_drop
            started = time.monotonic()
            report = await refresher.refresh()
            log.info(
                "rollups refreshed in %.2f s: %d minute rows, %d hour rows, late %d/%d%s",
                time.monotonic() - started,
                report.minute_rows,
                report.hour_rows,
                report.late_minutes,
                report.late_hours,
                " (another maintainer holds the lock)" if report.skipped else "",
            )
            if time.monotonic() >= next_drop:
                await drop_expired_chunks(c, targets)
                next_drop = time.monotonic() + self._settings.drop_interval_s

        await self._loop(conn, step, self._settings.refresh_interval_s)

    async def _loop(
        self,
        conn: AsyncConnection[tuple[object, ...]],
        step: _Step,
        interval_s: float,
    ) -> None:
        while True:
            await step(conn)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval_s)
            if self._stopping.is_set():
                return


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "maintain",
        help="keep rollups fresh and drop expired data (refresh/retention on either edition)",
        description=(
            "On TimescaleDB Community: install refresh, compression and retention policies, "
            "then report their health. On the Apache edition: refresh readings_1m/readings_1h "
            "incrementally and drop expired chunks on schedule."
        ),
    )
    p.add_argument("--once", action="store_true", help="run one refresh and drop, then exit")
    p.set_defaults(func=run_maintain)


def run_maintain(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    retention = settings.retention
    try:
        dsn = settings.db.service_dsn("maintain")
    except MissingDsnError as exc:
        log.error("%s", exc)
        return 2
    maintainer = Maintainer(dsn, retention)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, maintainer.stop)
        if args.once:
            loop.call_soon(maintainer.stop)
        await maintainer.run()

    try:
        asyncio.run(main())
    except psycopg.OperationalError as exc:
        log.error("database unavailable: %s", exc)
        return 1
    log.info("stopped")
    return 0
