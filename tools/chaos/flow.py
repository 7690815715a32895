"""What reached the database, and when: the rows a chaos row stored, watched as they land.

:class:`FlowWatch` counts the stream's rows a few times a second (through
every outage: a count that fails is skipped), so the timeline shows how long
the flow stood still. :func:`final_counts` then checks exactly-once (``count``
against ``count(DISTINCT (sensor_id, metric, time))``) and which packs are in.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg

from tools.chaos.stream import PackId, Stream

POLL_S = 0.25


@dataclass
class FlowWatch:
    """The stream's row count over time (monotonic seconds), polled until stopped."""

    dsn: str
    prefix: str
    samples: list[tuple[float, int]] = field(default_factory=list)
    _conn: psycopg.Connection[tuple[int]] | None = None

    def count(self) -> int | None:
        """The rows so far, or None while the database does not answer."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
            row = self._conn.execute(
                "SELECT count(*) FROM readings WHERE sensor_id LIKE %s", (self.prefix + "%",)
            ).fetchone()
        except psycopg.OperationalError:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return None
        return int(row[0]) if row else 0

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                n = await asyncio.to_thread(self.count)
                if n is not None:
                    self.samples.append((time.monotonic(), n))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL_S)
        finally:
            if self._conn is not None:
                self._conn.close()

    @property
    def latest(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def steady_since(self) -> float:
        """Since when (monotonic) the count has not changed."""
        if not self.samples:
            return time.monotonic()
        last = self.samples[-1][1]
        since = self.samples[-1][0]
        for at, n in reversed(self.samples):
            if n != last:
                break
            since = at
        return since

    def completed_at(self) -> float | None:
        """When the count first reached its final value."""
        if not self.samples:
            return None
        final = self.samples[-1][1]
        return next(at for at, n in self.samples if n == final)

    def longest_stall(self, since: float, until: float) -> float:
        """The longest time between ``since`` and ``until`` with no new row."""
        if until <= since:
            return 0.0
        pairs = zip(self.samples[1:], self.samples, strict=False)
        growth = [at for (at, n), (_, before) in pairs if n > before]
        marks = [since, *(at for at in growth if since < at <= until), until]
        return max(b - a for a, b in itertools.pairwise(marks))


@dataclass(frozen=True)
class Stored:
    rows: int
    distinct: int
    #: Readings stored, by pack.
    by_pack: dict[PackId, int]


def final_counts(dsn: str, stream: Stream) -> Stored:
    like = (stream.sensor_prefix + "%",)
    with psycopg.connect(dsn) as conn:
        totals = conn.execute(
            "SELECT count(*), count(DISTINCT (sensor_id, metric, time)) FROM readings"
            " WHERE sensor_id LIKE %s",
            like,
        ).fetchone()
        per_time = conn.execute(
            "SELECT sensor_id, round(extract(epoch FROM time) * 1000)::bigint, count(*)"
            " FROM readings WHERE sensor_id LIKE %s GROUP BY 1, 2",
            like,
        ).fetchall()
    by_pack: Counter[PackId] = Counter()
    for sensor_id, epoch_ms, n in per_time:
        by_pack[stream.pack_of_row(str(sensor_id), int(epoch_ms))] += int(n)
    rows, distinct = (int(totals[0]), int(totals[1])) if totals else (0, 0)
    return Stored(rows=rows, distinct=distinct, by_pack=dict(by_pack))
