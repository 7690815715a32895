"""The processor's publishing step never retries a record Kafka refuses as too large.

Kafka here is a stand-in that enforces a record-size limit, at ``send`` (as
aiokafka checks ``max_request_size``) or on delivery (as a broker with a lower
``max.message.bytes`` answers); the real producer is exercised end to end by
the integration tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from nakhon.config import DEFAULT_ROUTES, KafkaSettings, ProcessorSettings
from nakhon.domain.records import RawRecord, Reading, Rejection, Stage
from nakhon.processors import processor as processor_module
from nakhon.processors.metrics import ProcessorMetrics
from nakhon.processors.normalize import NormalizePolicy
from nakhon.processors.outputs import MAX_DEAD_LETTER_BYTES, OutRecord
from nakhon.processors.pipeline import BatchOutcome, Pipeline, RecordOutcome
from nakhon.processors.processor import KafkaBatch, Processor
from nakhon.processors.routing import Router
from nakhon.storage.writer import ReadingWriter

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
#: aiokafka's default max_request_size.
KAFKA_LIMIT = 1_048_576


class SizeLimitedKafka:
    """Accepts records up to ``limit`` bytes; refuses larger ones like Kafka does."""

    def __init__(self, limit: int, *, broker_side: bool = False, down_for: int = 0) -> None:
        self.limit = limit
        self.broker_side = broker_side
        self.down_for = down_for
        self.attempts = 0
        self.stored: list[tuple[str, OutRecord]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        self.attempts += 1
        if self.attempts > 1000:
            raise AssertionError("a record was retried without end")
        if self.down_for > 0:
            self.down_for -= 1
            raise KafkaConnectionError("Kafka is away")
        record = OutRecord(key, value, headers)
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if record.size > self.limit:
            if not self.broker_side:
                raise MessageSizeTooLargeError(f"{record.size} bytes")
            delivery.set_exception(MessageSizeTooLargeError(f"{record.size} bytes"))
            return delivery
        self.stored.append((topic, record))
        delivery.set_result(None)
        return delivery


class UnusedConsumer:
    """The tests here publish an outcome directly: nothing is consumed or committed."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def getmany(self, *, timeout_ms: int, max_records: int) -> KafkaBatch:
        raise AssertionError("not consumed in these tests")

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        raise AssertionError("not committed in these tests")

    def highwater(self, partition: TopicPartition) -> int | None:
        return None

    def assignment(self) -> set[TopicPartition]:
        return set()

    def pause(self, *partitions: TopicPartition) -> None:
        pass

    def paused(self) -> set[TopicPartition]:
        return set()

    def resume(self, *partitions: TopicPartition) -> None:
        pass

    def seek(self, partition: TopicPartition, offset: int) -> None:
        pass


Make = Callable[[SizeLimitedKafka], tuple[Processor, ProcessorMetrics]]


@pytest.fixture
def make_processor() -> Make:
    """Processors that publish to ``kafka``."""

    def make(kafka: SizeLimitedKafka) -> tuple[Processor, ProcessorMetrics]:
        metrics = ProcessorMetrics(CollectorRegistry())
        processor = Processor(
            KafkaSettings(bootstrap_servers="127.0.0.1:1"),
            ProcessorSettings(),
            Pipeline(Router(DEFAULT_ROUTES, "unknown"), NormalizePolicy()),
            ReadingWriter("postgresql://unused@127.0.0.1:1/unused"),  # never connected
            metrics,
            UnusedConsumer(),
            kafka,
        )
        return processor, metrics

    return make


def hostile_outcome() -> RecordOutcome:
    """A ~900 KB payload on a 60 KB topic with 100 rejections naming 10 KB metrics."""
    record = RawRecord(
        "city/rayong/" + "t" * 60_000 + "/json", b"x" * 900_000, NOW, partition=0, offset=9
    )
    rejections = tuple(
        Rejection("unknown_unit", "d" * 5_000, Stage.NORMALIZE, "s" * 10_000, "m" * 10_000)
        for _ in range(100)
    )
    return RecordOutcome(record, rejections=rejections, whole_rejection=True)


def good_outcome() -> RecordOutcome:
    record = RawRecord("city/rayong/aq-1/json", b'{"pm25": 12}', NOW, partition=0, offset=10)
    return RecordOutcome(record, readings=(Reading(NOW, "aq-1", "pm2_5", 12.0, "rayong"),))


async def publish(processor: Processor, *outcomes: RecordOutcome) -> None:
    await asyncio.wait_for(processor._publish(BatchOutcome(outcomes)), timeout=5)


async def test_a_hostile_dead_letter_fits_kafka_and_the_batch_goes_through(
    make_processor: Make,
) -> None:
    kafka = SizeLimitedKafka(KAFKA_LIMIT)
    processor, _ = make_processor(kafka)
    await publish(processor, hostile_outcome(), good_outcome())
    topics = [topic for topic, _ in kafka.stored]
    assert topics == ["nakhon.deadletter", "nakhon.readings"]
    letter = kafka.stored[0][1]
    assert letter.size <= MAX_DEAD_LETTER_BYTES
    assert dict(letter.headers)["truncated"] == b"true"


@pytest.mark.parametrize("broker_side", [False, True])
async def test_a_dead_letter_still_too_large_is_sent_with_its_headers_only(
    broker_side: bool, make_processor: Make
) -> None:
    kafka = SizeLimitedKafka(200_000, broker_side=broker_side)  # a broker's lower limit
    processor, metrics = make_processor(kafka)
    await publish(processor, hostile_outcome(), good_outcome())
    by_topic = dict(kafka.stored)
    letter = by_topic["nakhon.deadletter"]
    headers = dict(letter.headers)
    assert letter.value == b""
    assert (headers["reason"], headers["truncated"], headers["raw_offset"]) == (
        b"unknown_unit",
        b"true",
        b"9",
    )
    assert "nakhon.readings" in by_topic
    assert metrics.records_unpublishable.labels("nakhon.deadletter")._value.get() == 0


@pytest.mark.parametrize("broker_side", [False, True])
async def test_a_record_refused_even_with_headers_only_is_logged_counted_and_dropped(
    broker_side: bool, make_processor: Make, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = SizeLimitedKafka(100, broker_side=broker_side)  # refuses everything
    processor, metrics = make_processor(kafka)
    with caplog.at_level(logging.ERROR, logger="nakhon.processors.processor"):
        await publish(processor, hostile_outcome(), good_outcome())
    assert kafka.stored == []
    assert kafka.attempts == 3  # the dead letter, its header-only form, the readings
    assert metrics.records_unpublishable.labels("nakhon.deadletter")._value.get() == 1
    assert metrics.records_unpublishable.labels("nakhon.readings")._value.get() == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert sorted("nakhon.deadletter" in e for e in errors) == [False, True]


async def test_kafka_away_is_still_retried_until_it_is_back(
    make_processor: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processor_module, "_BACKOFF_MIN_S", 0.01)
    kafka = SizeLimitedKafka(KAFKA_LIMIT, down_for=3)
    processor, _ = make_processor(kafka)
    await publish(processor, hostile_outcome(), good_outcome())
    assert [topic for topic, _ in kafka.stored] == ["nakhon.deadletter", "nakhon.readings"]
