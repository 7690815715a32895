"""The processor's promise, with stand-ins for Kafka and the database: commit only what is durable.

The consumer, the producer and the database are fakes handed to
:class:`Processor`; they write every call into one shared log, so a test can
assert the order: the store, then the dead letters and readings acknowledged
by Kafka, and only then the offset commit. No service is involved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime

import orjson
import psycopg
import psycopg.errors
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry

from nakhon.config import DEFAULT_ROUTES, KafkaSettings, ProcessorSettings
from nakhon.domain.raw_record import MqttMessage, epoch_us, raw_headers
from nakhon.domain.records import Position, RawRecord, Reading, Stage
from nakhon.processors import processor as processor_module
from nakhon.processors.metrics import ProcessorMetrics
from nakhon.processors.normalize import NormalizePolicy
from nakhon.processors.pipeline import Pipeline, RecordOutcome
from nakhon.processors.processor import KafkaBatch, Processor
from nakhon.processors.routing import Router
from nakhon.storage.writer import WriteResult

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
CITY = "rayong"
RAW, DEAD, READINGS = "nakhon.raw", "nakhon.deadletter", "nakhon.readings"
#: The writer refuses the readings of sensors named so as a data error (SQLSTATE 22003).
POISON = "aq-poison"


def record(
    partition: int, offset: int, sensor: str = "aq-1", body: bytes | None = None
) -> ConsumerRecord[bytes, bytes]:
    """A ``nakhon.raw`` record as the gateway writes it: one pm2_5 value of ``sensor``."""
    topic = f"city/{CITY}/{sensor}/json"
    payload = body if body is not None else orjson.dumps({"ts": NOW.isoformat(), "pm25": 12})
    msg = MqttMessage(topic, payload, 1, 1, epoch_us(NOW))
    headers = raw_headers(msg, "gw-test")
    timestamp_ms = epoch_us(NOW) // 1000
    return ConsumerRecord(
        topic=RAW,
        partition=partition,
        offset=offset,
        timestamp=timestamp_ms,
        timestamp_type=0,
        key=topic.encode(),
        value=payload,
        checksum=None,
        serialized_key_size=len(topic),
        serialized_value_size=len(payload),
        headers=headers,
    )


def batch(*records: ConsumerRecord[bytes, bytes]) -> KafkaBatch:
    out: KafkaBatch = {}
    for r in records:
        out.setdefault(TopicPartition(RAW, r.partition), []).append(r)
    return out


class FakeDatabase:
    """Stores rows in a set; refuses the readings of :data:`POISON` as a data error.

    ``failures`` are raised by the next writes, one each, before any of them
    succeeds: a transient or blocking error of the database itself.
    """

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.rows: set[tuple[str, str, datetime]] = set()
        self.failures: list[psycopg.Error] = []
        self.fail_forever: psycopg.Error | None = None
        self.writes = 0
        self.on_write: Callable[[], Awaitable[None]] | None = None

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def write(
        self, readings: Sequence[Reading], positions: Sequence[Position]
    ) -> WriteResult:
        self.writes += 1
        if self.on_write is not None:
            await self.on_write()
        if self.fail_forever is not None:
            raise self.fail_forever
        if self.failures:
            raise self.failures.pop(0)
        if any(r.sensor_id.startswith(POISON) for r in readings):
            raise psycopg.errors.NumericValueOutOfRange("value out of range for type numeric")
        before = len(self.rows)
        self.rows |= {(r.sensor_id, r.metric, r.time) for r in readings}
        self.log.append(f"store {len(readings)}")
        return WriteResult(len(self.rows) - before, 0)

    async def sensor_cities(self) -> dict[str, str]:
        return {}

    async def registered_cities(self) -> frozenset[str]:
        return frozenset({CITY})

    async def registry_entries(
        self, sensor_ids: Collection[str], cities: Collection[str]
    ) -> tuple[dict[str, str], frozenset[str]]:
        return {}, frozenset()

    @property
    def sensors(self) -> set[str]:
        return {sensor for sensor, _, _ in self.rows}


class FakeKafka:
    """A producer whose acknowledgements arrive a moment after ``send``, logged when they do."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.away = False
        self.sent: list[tuple[str, bytes, dict[str, bytes]]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        if self.away:
            raise KafkaConnectionError("Kafka is away")
        self.log.append(f"send {topic}")
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def acknowledge() -> None:
            self.sent.append((topic, value, dict(headers)))
            self.log.append(f"acked {topic}")
            delivery.set_result(None)

        asyncio.get_running_loop().call_later(0.001, acknowledge)
        return delivery

    def topics(self) -> list[str]:
        return [topic for topic, _, _ in self.sent]


class FakeConsumer:
    """Hands out ``batches`` one by one, then asks the processor to stop."""

    def __init__(self, log: list[str], batches: list[KafkaBatch]) -> None:
        self.log = log
        self.batches = batches
        self.commits: list[dict[TopicPartition, int]] = []
        self.when_empty: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def getmany(self, *, timeout_ms: int, max_records: int) -> KafkaBatch:
        if self.batches:
            return self.batches.pop(0)
        if self.when_empty is not None:
            await self.when_empty()
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.log.append("commit")
        self.commits.append(dict(offsets))

    def highwater(self, partition: TopicPartition) -> int | None:
        return None


class Rig:
    def __init__(self, *batches: KafkaBatch) -> None:
        self.log: list[str] = []
        self.db = FakeDatabase(self.log)
        self.kafka = FakeKafka(self.log)
        self.consumer = FakeConsumer(self.log, list(batches))
        self.processor = Processor(
            KafkaSettings(bootstrap_servers="127.0.0.1:1"),
            ProcessorSettings(),
            Pipeline(Router(DEFAULT_ROUTES, "unknown"), NormalizePolicy()),
            self.db,
            ProcessorMetrics(CollectorRegistry()),
            self.consumer,
            self.kafka,
        )
        self.consumer.when_empty = self.processor.stop

    async def run(self) -> None:
        await asyncio.wait_for(self.processor.run(), timeout=5)

    def letters(self) -> list[dict[str, bytes]]:
        return [headers for topic, _, headers in self.kafka.sent if topic == DEAD]


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processor_module, "_BACKOFF_MIN_S", 0.005)


def sensor(n: int, poisoned: Collection[int] = ()) -> str:
    return f"{POISON}-{n}" if n in poisoned else f"aq-{n}"


@pytest.mark.parametrize("poisoned", [{0}, {6}, {12}, {3, 9}, {4, 5}])
async def test_bisection_dead_letters_exactly_the_poisoned_payloads(poisoned: set[int]) -> None:
    rig = Rig(batch(*(record(n % 2, 100 + n, sensor(n, poisoned)) for n in range(13))))
    await rig.run()
    assert rig.db.sensors == {sensor(n) for n in range(13) if n not in poisoned}
    letters = rig.letters()
    assert sorted(h["mqtt_topic"].decode() for h in letters) == sorted(
        f"city/{CITY}/{sensor(n, poisoned)}/json" for n in poisoned
    )
    assert {(h["reason"], h["stage"], h["partial"]) for h in letters} == {
        (b"storage_rejected", b"store", b"false")
    }
    assert all(h["detail"].startswith(b"22003: ") for h in letters)
    # Offsets 100..112: even ones on partition 0, odd ones on 1; the next to read.
    assert rig.consumer.commits == [{TopicPartition(RAW, 0): 113, TopicPartition(RAW, 1): 112}]


async def test_offsets_are_committed_after_the_store_and_every_send_was_acknowledged() -> None:
    rig = Rig(batch(record(0, 7), record(0, 8, "aq-2", b"not json")))
    await rig.run()
    assert rig.log[0] == "store 1"
    assert rig.log[-1] == "commit"
    assert sorted(rig.log[1:-1]) == sorted(
        [f"send {DEAD}", f"send {READINGS}", f"acked {DEAD}", f"acked {READINGS}"]
    )
    assert rig.letters()[0]["reason"] == b"malformed_json"
    assert rig.consumer.commits == [{TopicPartition(RAW, 0): 9}]


async def test_the_committed_offset_is_the_next_one_to_read_of_each_partition() -> None:
    first = batch(*(record(0, n, f"aq-{n}") for n in range(5, 10)), record(3, 100), record(3, 101))
    second = batch(record(3, 102, "aq-9"))
    rig = Rig(first, second)
    await rig.run()
    assert rig.consumer.commits == [
        {TopicPartition(RAW, 0): 10, TopicPartition(RAW, 3): 102},
        {TopicPartition(RAW, 3): 103},
    ]


async def test_nothing_is_committed_or_published_while_the_database_fails() -> None:
    rig = Rig(batch(record(0, 1), record(0, 2, "aq-2", b"not json")))
    rig.db.fail_forever = psycopg.OperationalError("connection refused")
    running = asyncio.create_task(rig.run())
    await eventually(lambda: rig.db.writes >= 3)  # retried, with backoff
    await rig.processor.stop()  # SIGTERM during the retries
    await running
    assert rig.consumer.commits == []
    assert rig.kafka.sent == []  # not even the dead letter: the batch replays whole
    assert rig.db.rows == set()


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.InsufficientPrivilege("permission denied for table readings"),
        psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
        psycopg.errors.UndefinedTable('relation "readings" does not exist'),
    ],
    ids=["permission", "read-only", "no-schema"],
)
async def test_a_database_error_not_about_the_rows_blames_no_row(error: psycopg.Error) -> None:
    rig = Rig(batch(*(record(0, n, f"aq-{n}") for n in range(4))))
    rig.db.failures = [error, error]
    await rig.run()
    assert rig.db.sensors == {f"aq-{n}" for n in range(4)}
    assert rig.letters() == []
    assert rig.consumer.commits == [{TopicPartition(RAW, 0): 4}]


async def test_a_stop_mid_batch_finishes_that_batch_and_commits_only_it() -> None:
    rig = Rig(batch(record(0, 1)), batch(record(0, 2, "aq-2")))

    async def sigterm() -> None:
        rig.db.on_write = None
        await rig.processor.stop()

    rig.db.on_write = sigterm
    await rig.run()
    assert rig.db.sensors == {"aq-1"}
    assert rig.consumer.commits == [{TopicPartition(RAW, 0): 2}]
    assert len(rig.consumer.batches) == 1  # the second batch was never taken


async def test_a_stop_while_kafka_refuses_the_dead_letters_commits_nothing() -> None:
    rig = Rig(batch(record(0, 1), record(0, 2, "aq-2", b"not json")))
    rig.kafka.away = True
    running = asyncio.create_task(rig.run())
    await eventually(lambda: rig.db.sensors == {"aq-1"})
    await asyncio.sleep(0.05)  # retrying the sends
    await rig.processor.stop()
    await running
    assert rig.kafka.sent == []
    assert rig.consumer.commits == []  # stored, but replayed (a no-op) with its dead letter


def test_a_storage_refusal_is_a_new_outcome_and_leaves_the_pipelines_untouched() -> None:
    reading = Reading(NOW, "aq-1", "pm2_5", 12.0, CITY)
    judged = RecordOutcome(RawRecord("city/rayong/aq-1/json", b"{}", NOW), readings=(reading,))
    error = psycopg.errors.CheckViolation("new row violates check constraint")
    refused = Processor._refused(judged, error)
    assert judged.readings == (reading,) and judged.rejections == ()
    assert (refused.readings, refused.positions, refused.whole_rejection) == ((), (), True)
    assert [(r.reason, r.stage) for r in refused.rejections] == [("storage_rejected", Stage.STORE)]
    with pytest.raises(FrozenInstanceError):
        judged.whole_rejection = True  # type: ignore[misc]


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)
