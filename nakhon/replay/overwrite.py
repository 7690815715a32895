"""``nakhon replay raw --overwrite``: re-read a time range of raw records, update what differs.

A plain ``replay raw`` sends records back to the processors, whose role may
only insert, so a reading already stored keeps its first value. When a fixed
decoder (or a changed setting: a unit, an alias) reads a payload differently
and the operator wants the stored values to follow, this runs the range
through the processors' own pipeline (route, decode, normalize, enrich:
:class:`nakhon.processors.pipeline.Pipeline`, configured from the same
``NAKHON_PROCESSOR_*`` settings) in this process, and upserts the rows as the
schema owner (``NAKHON_DB_DSN``, as ``nakhon migrate``):
:class:`nakhon.storage.writer.ReadingOverwriter` inserts readings that are
missing, updates those stored with another value, and counts both and the
unchanged ones. Rejected records are counted by reason, not dead-lettered:
this is an operator's correction, not the data path. Afterwards the rollups
are refreshed over the time range of the rows it changed.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

import psycopg

from nakhon.config import Settings
from nakhon.domain.raw_record import decode_raw_record
from nakhon.domain.records import Position, Reading
from nakhon.processors.normalize import NormalizePolicy
from nakhon.processors.pipeline import Pipeline, RecordOutcome
from nakhon.processors.routing import Router
from nakhon.replay.topic_reader import ReadProgress, read_topic
from nakhon.replay.window import TimeWindow
from nakhon.storage.rollup_range import RangeRefresh, refresh_rollups
from nakhon.storage.writer import OverwriteResult, ReadingOverwriter, UpsertCounts

#: Rows (readings and positions) upserted per transaction.
BATCH_ROWS = 5000
#: Attempts of a batch that lost a deadlock to a processor writing the same keys.
_ATTEMPTS = 3


@dataclass
class TableCounts:
    """Running totals of one table's upserts."""

    inserted: int = 0
    changed: int = 0
    unchanged: int = 0
    first: datetime | None = None
    last: datetime | None = None

    def add(self, batch: UpsertCounts) -> None:
        self.inserted += batch.inserted
        self.changed += batch.changed
        self.unchanged += batch.unchanged
        if batch.first is not None:
            self.first = batch.first if self.first is None else min(self.first, batch.first)
        if batch.last is not None:
            self.last = batch.last if self.last is None else max(self.last, batch.last)


@dataclass
class OverwriteReport:
    """Everything the command prints: records read, rows upserted, rejections by reason."""

    topic: str
    dry_run: bool
    records: Counter[str] = field(
        default_factory=lambda: Counter(read=0, selected=0, accepted=0, rejected=0)
    )
    readings: TableCounts = field(default_factory=TableCounts)
    positions: TableCounts = field(default_factory=TableCounts)
    #: Readings (or positions) read twice in the range: the record read last wins.
    duplicates: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    rollups: RangeRefresh | None = None

    def progress_counts(self) -> dict[str, int]:
        r = self.readings
        return {
            **self.records,
            "inserted": r.inserted,
            "changed": r.changed,
            "unchanged": r.unchanged,
        }

    def text(self) -> str:
        lines = ["replay --overwrite summary:", "records:"]
        lines += [f"  {name:<24}{n:>10,}" for name, n in self.records.items()]
        for name, table in (("readings", self.readings), ("positions", self.positions)):
            lines.append(f"{name}:")
            lines += [
                f"  {'inserted':<24}{table.inserted:>10,}",
                f"  {'changed':<24}{table.changed:>10,}",
                f"  {'unchanged':<24}{table.unchanged:>10,}",
            ]
        if self.duplicates:
            lines.append(f"  {'duplicate_in_range':<24}{self.duplicates:>10,}  (last read wins)")
        if self.rejected_by_reason:
            lines.append("rejected by reason (not dead-lettered):")
            lines += [f"  {r:<24}{n:>10,}" for r, n in self.rejected_by_reason.most_common()]
        r = self.readings
        if self.dry_run:
            lines.append(
                f"dry run: would insert {r.inserted:,} readings and change {r.changed:,} "
                f"({r.unchanged:,} unchanged); nothing written (each batch's transaction "
                "rolled back)"
            )
        else:
            lines.append(
                f"{r.changed:,} readings changed, {r.inserted:,} inserted, "
                f"{r.unchanged:,} unchanged"
            )
            if self.rollups is not None:
                lines.append(self.rollups.line())
            elif r.first is None:
                lines.append("rollups: nothing changed, nothing to refresh")
        return "\n".join(lines)


def build_pipeline(settings: Settings) -> Pipeline:
    """The processors' pipeline from the same settings the processors read."""
    processor = settings.processor
    return Pipeline(
        Router(processor.routes, processor.lorawan_city),
        NormalizePolicy.from_settings(processor),
        strict_sensors=processor.strict_sensors,
    )


@dataclass
class _Batch:
    """The rows of a batch keyed by their unique key: a key read again replaces the first."""

    readings: dict[tuple[str, str, datetime], Reading] = field(default_factory=dict)
    positions: dict[tuple[str, datetime], Position] = field(default_factory=dict)
    duplicates: int = 0

    def add(self, outcome: RecordOutcome) -> None:
        for r in outcome.readings:
            key = (r.sensor_id, r.metric, r.time)
            self.duplicates += key in self.readings
            self.readings[key] = r
        for p in outcome.positions:
            pkey = (p.vehicle_id, p.time)
            self.duplicates += pkey in self.positions
            self.positions[pkey] = p

    def __len__(self) -> int:
        return len(self.readings) + len(self.positions)


async def overwrite_range(
    settings: Settings,
    window: TimeWindow,
    selects: Callable[[str], bool],
    report: OverwriteReport,
    out: TextIO | None = None,
) -> None:
    """Run the raw records of ``window`` whose MQTT topic ``selects`` through the pipeline and
    upsert their rows; fills ``report`` as it goes (so a failure still says what was done).

    Raises psycopg.Error (the database), KafkaError or TopicReadError (Kafka).
    """
    pipeline = build_pipeline(settings)
    dsn = settings.db.dsn.get_secret_value()
    progress = ReadProgress(report.topic, out=out or sys.stderr)
    async with ReadingOverwriter(dsn) as writer:
        pipeline.directory.replace(await writer.sensor_cities(), await writer.registered_cities())
        batch = _Batch()
        async for record in read_topic(settings.kafka, report.topic, window, progress):
            report.records["read"] += 1
            raw = decode_raw_record(record)
            if not selects(raw.mqtt_topic):
                continue
            report.records["selected"] += 1
            outcome = pipeline.process(raw)
            pipeline.directory.take_misses()  # the snapshot is the registry at the start
            report.records["rejected" if outcome.whole_rejection else "accepted"] += 1
            report.rejected_by_reason.update(r.reason for r in outcome.rejections)
            batch.add(outcome)
            if len(batch) >= BATCH_ROWS:
                await _flush(writer, batch, report)
                batch = _Batch()
            progress.counts = report.progress_counts()
        await _flush(writer, batch, report)
        progress.counts = report.progress_counts()
        progress.tick(force=True)
    first, last = report.readings.first, report.readings.last
    if not report.dry_run and first is not None and last is not None:
        report.rollups = await refresh_rollups(dsn, first, last)


async def _flush(writer: ReadingOverwriter, batch: _Batch, report: OverwriteReport) -> None:
    report.duplicates += batch.duplicates
    if not batch:
        return
    readings, positions = list(batch.readings.values()), list(batch.positions.values())
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            result: OverwriteResult = await writer.upsert(readings, positions, report.dry_run)
            break
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            # A processor inserting the same keys meanwhile; the transaction
            # rolled back whole, so the batch is simply tried again.
            if attempt == _ATTEMPTS:
                raise
            await asyncio.sleep(0.1 * attempt)
    report.readings.add(result.readings)
    report.positions.add(result.positions)
