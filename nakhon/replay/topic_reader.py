"""Read a Kafka topic once, from a time (or its beginning) to its end as of the start.

A plain consumer outside any group (nothing committed, no rebalance, the
processors' group untouched): every partition is assigned, sought to the
first offset at or after ``--since`` (``offsets_for_times``) or to its
beginning, and read up to the end offset it had when the read began, or the
first offset past ``--until``. Records produced meanwhile (a replay's own)
are not read.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from nakhon.config import KafkaSettings
from nakhon.kafka_client import kafka_client_options
from nakhon.replay.window import TimeWindow

#: Seconds between progress lines on stderr.
PROGRESS_EVERY_S = 2.0
#: Seconds without a record while some are still due before the read gives up.
STALL_TIMEOUT_S = 60.0


class TopicReadError(RuntimeError):
    """The topic does not exist, or stopped delivering records it has."""


@dataclass
class ReadProgress:
    """Counts of a read, printed on stderr every :data:`PROGRESS_EVERY_S` seconds."""

    topic: str
    out: TextIO = field(default_factory=lambda: sys.stderr)
    total: int = 0
    read: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    _last: float = field(default_factory=time.monotonic)

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_EVERY_S:
            return
        self._last = now
        extra = "".join(f", {name} {n:,}" for name, n in self.counts.items() if name != "read")
        print(f"{self.topic}: read {self.read:,}/{self.total:,} records{extra}", file=self.out)


@asynccontextmanager
async def _consumer(settings: KafkaSettings) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def read_topic(
    settings: KafkaSettings,
    topic: str,
    window: TimeWindow,
    progress: ReadProgress | None = None,
) -> AsyncGenerator[Any, None]:
    """Every record of ``topic`` whose timestamp is in ``window``, partition by partition order.

    Yields aiokafka ``ConsumerRecord`` objects. Raises :class:`TopicReadError`
    if the topic does not exist or records stop coming for
    :data:`STALL_TIMEOUT_S` while some are due.
    """
    async with _consumer(settings) as consumer:
        partitions = await _partitions(settings, topic)
        consumer.assign(partitions)
        starts, ends = await _bounds(consumer, partitions, window)
        due = {tp for tp in partitions if starts[tp] < ends[tp]}
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        if progress is not None:
            progress.total = sum(max(0, ends[tp] - starts[tp]) for tp in partitions)
        last_record = time.monotonic()
        while due:
            consumer.pause(*(tp for tp in partitions if tp not in due))
            batch = await consumer.getmany(*due, timeout_ms=1000)
            for tp, records in batch.items():
                last_record = time.monotonic()
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    if progress is not None:
                        progress.read += 1
                    if window.contains(record.timestamp):
                        yield record
            for tp in list(due):
                if await consumer.position(tp) >= ends[tp]:
                    due.discard(tp)
            if progress is not None:
                progress.tick()
            if due and time.monotonic() - last_record > STALL_TIMEOUT_S:
                raise TopicReadError(
                    f"{topic}: no record for {STALL_TIMEOUT_S:.0f} s though "
                    f"{len(due)} partitions have more (is Kafka reachable?)"
                )


async def _partitions(settings: KafkaSettings, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` as the cluster's metadata lists them."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] != 0 or not described["partitions"]:
        raise TopicReadError(f"Kafka has no topic {topic!r} (error {described['error_code']})")
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def _bounds(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], window: TimeWindow
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """First and past-last offsets to read of each partition for ``window``."""
    firsts: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    starts = dict(firsts)
    if window.since_ms is not None:
        found = await consumer.offsets_for_times({tp: window.since_ms for tp in partitions})
        starts = {tp: ends[tp] if found[tp] is None else found[tp].offset for tp in partitions}
    if window.until_ms is not None:
        # Past the last record at or before --until: the first one after it.
        past = await consumer.offsets_for_times({tp: window.until_ms + 1 for tp in partitions})
        ends = {tp: ends[tp] if past[tp] is None else past[tp].offset for tp in partitions}
    return starts, ends
