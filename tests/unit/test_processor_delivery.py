"""The processor's promise, with stand-ins for Kafka and the database: commit only what is durable.

The consumer, the producer and the database are fakes handed to
:class:`Processor`; they write every call into one shared log, so a test can
assert the order: the store, then the dead letters and readings acknowledged
by Kafka, and only then the offset commit. No service is involved.
"""

from __future__ import annotations

import asyncio
import re
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

from nakhon.config import DEFAULT_ROUTES, KafkaSettings, ProcessorSettings, Settings
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
#: The partitions of nakhon.raw the fake consumer is assigned.
ASSIGNED = frozenset(TopicPartition(RAW, p) for p in range(4))
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
    """Hands out ``batches`` one by one, then asks the processor to stop.

    It is assigned :data:`ASSIGNED`. While any partition is paused a poll
    returns nothing, after its ``timeout_ms``, unless ``strays`` holds records:
    those come back as aiokafka returns the records of partitions a rebalance
    assigned during the poll (unpaused).
    """

    def __init__(self, log: list[str], batches: list[KafkaBatch]) -> None:
        self.log = log
        self.batches = batches
        self.commits: list[dict[TopicPartition, int]] = []
        self.when_empty: Callable[[], Awaitable[None]] | None = None
        self.assigned = set(ASSIGNED)
        self.paused_now: set[TopicPartition] = set()
        #: What was paused at each poll made while something was paused.
        self.paused_polls: list[frozenset[TopicPartition]] = []
        self.strays: KafkaBatch = {}
        self.seeks: list[tuple[TopicPartition, int]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def getmany(self, *, timeout_ms: int, max_records: int) -> KafkaBatch:
        if self.paused_now:
            self.paused_polls.append(frozenset(self.paused_now))
            await asyncio.sleep(timeout_ms / 1000)
            strays, self.strays = self.strays, {}
            self.assigned |= strays.keys()
            return strays
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

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        assert set(partitions) <= self.assigned, "aiokafka: IllegalStateError"
        self.paused_now |= set(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_now)

    def resume(self, *partitions: TopicPartition) -> None:
        self.log.append(f"resume {len(partitions)}")
        self.paused_now -= set(partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        assert partition in self.assigned, "aiokafka: IllegalStateError"
        self.seeks.append((partition, offset))


class Rig:
    def __init__(self, *batches: KafkaBatch) -> None:
        self.log: list[str] = []
        self.db = FakeDatabase(self.log)
        self.kafka = FakeKafka(self.log)
        self.consumer = FakeConsumer(self.log, list(batches))
        self.registry = CollectorRegistry()
        self.processor = Processor(
            KafkaSettings(bootstrap_servers="127.0.0.1:1"),
            ProcessorSettings(),
            Pipeline(Router(DEFAULT_ROUTES, "unknown"), NormalizePolicy()),
            self.db,
            ProcessorMetrics(self.registry),
            self.consumer,
            self.kafka,
        )
        self.consumer.when_empty = self.processor.stop

    async def run(self) -> None:
        await asyncio.wait_for(self.processor.run(), timeout=5)

    def letters(self) -> list[dict[str, bytes]]:
        return [headers for topic, _, headers in self.kafka.sent if topic == DEAD]

    def metric(self, name: str) -> float | None:
        return self.registry.get_sample_value(name)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processor_module, "_BACKOFF_MIN_S", 0.005)
    monkeypatch.setattr(processor_module, "_HOLD_POLL_MS", 2)


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


#: The database refusing the processor's login (its role made NOLOGIN, its password
#: changed): psycopg's failed connection carries no SQLSTATE; a server may send 28xxx.
LOGIN_REFUSED = [
    psycopg.OperationalError('connection failed: FATAL:  role "w" is not permitted to log in'),
    psycopg.errors.InvalidAuthorizationSpecification('role "w" is not permitted to log in'),
    psycopg.errors.InvalidPassword('password authentication failed for user "w"'),
]
READY_DETAIL = re.compile(
    r"database unavailable \(retrying\) since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, partitions paused"
)


@pytest.mark.parametrize("refusal", LOGIN_REFUSED, ids=["no-sqlstate", "28000", "28P01"])
async def test_a_long_outage_polls_with_every_partition_paused_and_resumes_after_the_commit(
    refusal: psycopg.Error,
) -> None:
    rig = Rig(batch(record(0, 1), record(1, 5, "aq-2"), record(1, 6, "aq-3", b"not json")))
    rig.db.fail_forever = refusal
    await rig.processor.start()
    running = asyncio.create_task(rig.run())
    # Polled on and on (the member stays in the group), every partition paused each time.
    await eventually(lambda: len(rig.consumer.paused_polls) >= 20 and rig.db.writes >= 3)
    assert set(rig.consumer.paused_polls) == {ASSIGNED}
    assert (rig.consumer.commits, rig.kafka.sent, rig.db.rows) == ([], [], set())
    ready, detail = rig.processor.readiness()
    assert not ready
    assert READY_DETAIL.fullmatch(detail), detail
    assert rig.metric("nakhon_processor_partitions_paused") == len(ASSIGNED)
    assert (rig.metric("nakhon_processor_db_outage_seconds") or 0) > 0

    rig.db.fail_forever = None  # the database is back
    await running
    assert rig.db.sensors == {"aq-1", "aq-2"}
    assert [h["reason"] for h in rig.letters()] == [b"malformed_json"]  # not the refusal
    assert rig.consumer.commits == [{TopicPartition(RAW, 0): 2, TopicPartition(RAW, 1): 7}]
    assert rig.log[-2:] == ["commit", f"resume {len(ASSIGNED)}"]
    assert rig.consumer.paused_now == set()
    assert rig.processor.readiness() == (True, "consuming")
    assert rig.metric("nakhon_processor_partitions_paused") == 0
    assert rig.metric("nakhon_processor_db_outage_seconds") == 0


async def test_records_polled_while_paused_are_sought_back_to_their_first_offset() -> None:
    rig = Rig(batch(record(0, 1)))
    rig.db.fail_forever = psycopg.OperationalError("connection refused")
    # A rebalance assigns partition 5 during a poll: aiokafka returns its records, unpaused.
    new = TopicPartition(RAW, 5)
    rig.consumer.strays = {new: [record(5, 40, "aq-40"), record(5, 41, "aq-41")]}
    running = asyncio.create_task(rig.run())
    await eventually(lambda: len(rig.consumer.paused_polls) >= 5)
    assert rig.consumer.seeks == [(new, 40)]
    assert rig.consumer.paused_polls[1:] == [ASSIGNED | {new}] * (
        len(rig.consumer.paused_polls) - 1
    )
    rig.db.fail_forever = None
    await running
    assert rig.db.sensors == {"aq-1"}  # not the strays: read again after the resume
    assert rig.consumer.commits == [{TopicPartition(RAW, 0): 2}]
    assert rig.log[-1] == f"resume {len(ASSIGNED) + 1}"


async def test_sigterm_during_a_long_outage_ends_the_polls_and_commits_nothing() -> None:
    rig = Rig(batch(record(0, 1), record(0, 2, "aq-2", b"not json")), batch(record(0, 3, "aq-3")))
    rig.db.fail_forever = LOGIN_REFUSED[1]
    running = asyncio.create_task(rig.run())
    await eventually(lambda: len(rig.consumer.paused_polls) >= 10)
    await rig.processor.stop()  # SIGTERM
    await running
    polls = len(rig.consumer.paused_polls)
    await asyncio.sleep(0.05)
    assert len(rig.consumer.paused_polls) == polls  # the polls ended with the batch
    assert (rig.consumer.commits, rig.kafka.sent, rig.db.rows) == ([], [], set())
    assert len(rig.consumer.batches) == 1  # the next batch was never taken


async def test_a_batch_slower_than_the_hold_delay_holds_its_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(processor_module, "_HOLD_AFTER_S", 0.01)
    rig = Rig(batch(record(2, 9)))

    async def hanging_write() -> None:  # no failure: a write that takes long
        await eventually(lambda: len(rig.consumer.paused_polls) >= 3)

    rig.db.on_write = hanging_write
    await rig.run()
    assert set(rig.consumer.paused_polls) == {ASSIGNED}
    assert rig.consumer.commits == [{TopicPartition(RAW, 2): 10}]
    assert rig.log[-2:] == ["commit", f"resume {len(ASSIGNED)}"]


async def test_kafka_away_while_publishing_holds_the_partitions_until_the_commit() -> None:
    rig = Rig(batch(record(0, 1), record(0, 2, "aq-2", b"not json")))
    rig.kafka.away = True
    running = asyncio.create_task(rig.run())
    await eventually(lambda: len(rig.consumer.paused_polls) >= 5)
    assert rig.db.sensors == {"aq-1"}
    assert rig.consumer.commits == []
    rig.kafka.away = False
    await running
    assert rig.consumer.commits == [{TopicPartition(RAW, 0): 3}]
    assert rig.log[-2:] == ["commit", f"resume {len(ASSIGNED)}"]


def test_max_poll_interval_is_a_setting_with_aiokafkas_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert KafkaSettings().max_poll_interval_ms == 300_000
    monkeypatch.setenv("NAKHON_KAFKA_MAX_POLL_INTERVAL_MS", "10000")
    assert Settings().kafka.max_poll_interval_ms == 10_000


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
