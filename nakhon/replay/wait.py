"""``--wait``: after a replay's sends, how many of its records were rejected again.

The processors commit a batch's offsets only after its rows are stored and
its dead letters are in Kafka. So once their consumer group
(NAKHON_KAFKA_CONSUMER_GROUP) has committed past the last offset each send
returned, every replayed record is either stored (or was already: rows are
idempotent) or dead-lettered again, with the ``replayed_from`` header the
processor copies from the raw record. The dead-letter topic, read from the
replay's start time, then says which: the letters whose ``replayed_from``
names this run (:func:`run_tag`).
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from nakhon.config import KafkaSettings
from nakhon.domain.raw_record import parse_headers
from nakhon.kafka_client import kafka_client_options
from nakhon.replay.letters import REPLAYED_FROM
from nakhon.replay.topic_reader import PROGRESS_EVERY_S, read_topic
from nakhon.replay.window import TimeWindow

#: Seconds between two looks at the consumer group's committed offsets.
_POLL_S = 1.0


class WaitTimeoutError(RuntimeError):
    """The processors did not commit past the replay's records in time."""


def new_run_id() -> str:
    """A short id, unique per replay run, carried in every ``replayed_from`` it writes."""
    return secrets.token_hex(6)


def run_tag(run_id: str) -> str:
    """The ``replayed_from`` suffix of one run: ``<topic>/<partition>/<offset>#<run id>``."""
    return f"#{run_id}"


@dataclass
class Rejudged:
    """What became of a run's sent records: rejected again (by reason), the rest stored."""

    sent: int
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_again(self) -> int:
        return sum(self.rejected.values())

    def line(self) -> str:
        again = self.rejected_again
        text = f"sent {self.sent:,}, stored or already stored {self.sent - again:,}, "
        text += f"rejected again {again:,}"
        if again:
            reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(self.rejected.items()))
            text += f" (by reason: {reasons})"
        return text


async def wait_for_group(
    kafka: KafkaSettings,
    last_offsets: Mapping[int, int],
    timeout_s: float,
    out: TextIO = sys.stderr,
) -> None:
    """Return once the processors' group committed past ``last_offsets`` (raw partition: offset).

    Raises :class:`WaitTimeoutError` after ``timeout_s``.
    """
    wanted = {TopicPartition(kafka.raw_topic, p): o for p, o in last_offsets.items()}
    if not wanted:
        return
    admin = AIOKafkaAdminClient(**kafka_client_options(kafka))
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        last_print = 0.0
        while True:
            committed = await admin.list_consumer_group_offsets(
                kafka.consumer_group, partitions=list(wanted)
            )
            behind = [
                tp
                for tp, offset in wanted.items()
                if tp not in committed or committed[tp].offset <= offset
            ]
            now = time.monotonic()
            if not behind or now - last_print >= PROGRESS_EVERY_S:
                last_print = now
                done = len(wanted) - len(behind)
                print(
                    f"waiting for consumer group {kafka.consumer_group}: "
                    f"{done}/{len(wanted)} partitions committed past the replay's records",
                    file=out,
                )
            if not behind:
                return
            if now >= deadline:
                raise WaitTimeoutError(
                    f"consumer group {kafka.consumer_group} did not commit past the replay's "
                    f"records within {timeout_s:g} s (are the processors running?)"
                )
            await asyncio.sleep(_POLL_S)
    finally:
        await admin.close()


async def rejected_again(kafka: KafkaSettings, run_id: str, since: datetime, sent: int) -> Rejudged:
    """The dead letters written since ``since`` of records this run sent, by reason.

    A letter repeated in the topic (dead letters are at-least-once) counts once.
    """
    tag = run_tag(run_id)
    result = Rejudged(sent)
    seen: set[str] = set()
    async for record in read_topic(kafka, kafka.deadletter_topic, TimeWindow(since=since)):
        headers = parse_headers(record.headers or ())
        origin = headers.get(REPLAYED_FROM, "")
        if not origin.endswith(tag) or origin in seen:
            continue
        seen.add(origin)
        result.rejected[headers.get("reason") or "?"] += 1
    return result
