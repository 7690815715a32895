"""The processor: consume a batch, make it durable, then commit its offsets.

The loop, one batch at a time (quix-streams' checkpoint, in a few lines):

1. ``getmany`` up to ``batch_max_records`` records of ``nakhon.raw``;
2. route, decode and normalize them (:class:`Pipeline`, pure);
3. write readings and positions to TimescaleDB in one transaction
   (:class:`ReadingWriter`); transient errors are retried with capped backoff,
   errors about the data are isolated by bisecting the batch and only the
   records that cause them go to the dead letters; any other error (the
   database away, read-only, a permission missing) blocks the batch, retried
   with capped backoff, until it passes (``nakhon/storage/errors.py``);
4. send dead letters and normalized readings to Kafka and wait for their acks;
5. only then commit the batch's offsets.

A crash anywhere before 5 replays the batch; the unique key (sensor, metric,
time) makes the replayed rows no-ops, so every reading is stored exactly once.
``nakhon.deadletter`` and ``nakhon.readings`` are at-least-once: a replay may
repeat a record there.

A batch that waits (the database or Kafka away, retried in 3 or 4) keeps the
processor in its consumer group: the group counts a member that has not polled
for ``max_poll_interval_ms`` as dead and hands its partitions to others (with
several processors, over and over: a rebalance storm). So the waiting batch
pauses every assigned partition and polls on (paused partitions return
nothing); records that come back all the same (partitions a rebalance just
assigned, not paused yet) are sought back to their first offset, so nothing is
skipped; the partitions resume once the batch is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Protocol

import psycopg
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
)

from nakhon.config import KafkaSettings, ProcessorSettings
from nakhon.domain.raw_record import decode_raw_record
from nakhon.domain.records import Position, Reading, Rejection, Stage
from nakhon.kafka_client import RecordProducer
from nakhon.processors.metrics import ProcessorMetrics
from nakhon.processors.outputs import (
    OutRecord,
    dead_letter_record,
    header_only_dead_letter,
    readings_records,
)
from nakhon.processors.pipeline import BatchOutcome, DeadLetter, Pipeline, RecordOutcome
from nakhon.storage.errors import classify, is_transient
from nakhon.storage.writer import WriteResult

log = logging.getLogger(__name__)

_BACKOFF_MIN_S = 0.5
_BACKOFF_MAX_S = 30.0
#: How long one poll of a held batch waits: at most this late, the batch's end stops the polls.
_HOLD_POLL_MS = 500
#: A batch that lasts longer holds its partitions even before anything failed (a write that
#: hangs on a dead host); a quarter of ``max_poll_interval_ms`` if that is shorter.
_HOLD_AFTER_S = 10.0


#: What ``getmany`` returns: records per partition.
KafkaBatch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
#: A record to publish: Kafka topic, record, and the dead letter it was made from (if one).
_Outgoing = tuple[str, OutRecord, DeadLetter | None]


class ShuttingDown(Exception):
    """Raised inside a batch when a shutdown interrupts a retry: nothing is committed."""


class RawConsumer(Protocol):
    """What the processor calls on its consumer of ``nakhon.raw`` (aiokafka's, in production)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def getmany(self, *, timeout_ms: int, max_records: int) -> KafkaBatch: ...
    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...
    # While a batch waits: pause, poll, seek back what came anyway, resume.
    def assignment(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def paused(self) -> set[TopicPartition]: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...


class ReadingStore(Protocol):
    """What the processor calls on the database (:class:`~nakhon.storage.writer.ReadingWriter`)."""

    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def write(
        self, readings: Sequence[Reading], positions: Sequence[Position]
    ) -> WriteResult: ...
    async def sensor_cities(self) -> dict[str, str]: ...
    async def registered_cities(self) -> frozenset[str]: ...
    async def registry_entries(
        self, sensor_ids: Collection[str], cities: Collection[str]
    ) -> tuple[dict[str, str], frozenset[str]]: ...


class Processor:
    """Consumes ``nakhon.raw`` in a consumer group; ``start``, ``run``, ``stop``.

    Its clients are given, not built (``nakhon/processors/command.py`` builds
    the production ones): a test can hand it stand-ins.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: ProcessorSettings,
        pipeline: Pipeline,
        writer: ReadingStore,
        metrics: ProcessorMetrics,
        consumer: RawConsumer,
        producer: RecordProducer,
    ) -> None:
        self._kafka = kafka
        self._settings = settings
        self._pipeline = pipeline
        self._writer = writer
        self._metrics = metrics
        self._consumer = consumer
        self._producer = producer
        self._stopping = asyncio.Event()
        self._db_ok = False
        #: Unix time the database stopped taking this processor's writes; None while it takes them.
        self._db_down_since: float | None = None
        self._started = False
        #: True while a batch is in process: only a batch holds its partitions.
        self._in_batch = False
        #: The polls that keep a waiting batch's member in the group, and what ends them.
        self._hold: asyncio.Task[None] | None = None
        self._hold_ends = asyncio.Event()
        metrics.db_outage_seconds.set_function(self._outage_seconds)
        self._city_newest: dict[str, float] = {}
        self._registry_loaded_at = -math.inf
        #: Looked up since the last refresh and not registered: not asked again until then.
        self._not_registered: set[str] = set()
        self._not_registered_cities: set[str] = set()

    async def start(self, prepare: Callable[[], Awaitable[None]] | None = None) -> None:
        """Connect to the database and Kafka, waiting (with capped backoff) until both answer.

        ``prepare`` runs once the database answers and before the registry is
        read, until it stops raising ``OperationalError``: the wait for the
        schema (``nakhon migrate`` runs apart, as the owner; the registry's
        tables must exist). Raises :class:`ShuttingDown` if a
        stop is requested while waiting.
        """
        await self._until_up("the database", self._writer.connect)
        if prepare is not None:
            await self._until_up("the migrated schema", prepare)
        # Before the first batch: every city check, strict mode and LoRaWAN
        # cities need the registry.
        await self._until_up("the sensor registry", self.refresh_registry)
        self._db_ok = True
        await self._until_up("Kafka", self._producer.start)
        await self._until_up("Kafka", self._consumer.start)
        self._started = True
        log.info(
            "consuming %s as group %s, batches of up to %d records",
            self._kafka.raw_topic,
            self._kafka.consumer_group,
            self._settings.batch_max_records,
        )

    async def _until_up(self, what: str, connect: Callable[[], Awaitable[None]]) -> None:
        delay = _BACKOFF_MIN_S
        while True:
            try:
                await connect()
                return
            except (psycopg.OperationalError, KafkaError, OSError) as exc:
                log.warning("%s is not reachable (%s); retrying in %.1fs", what, exc, delay)
                await self._sleep_or_stop(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)

    async def run(self) -> None:
        """Process batches until :meth:`stop` is called."""
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(
                timeout_ms=self._settings.batch_max_wait_ms,
                max_records=self._settings.batch_max_records,
            )
            if not batch:
                continue
            try:
                await self.process(batch)
            except ShuttingDown:
                log.info("shutdown during a retry: the batch stays uncommitted and will replay")
                return

    async def stop(self) -> None:
        """Let the current batch finish (durable, then committed), then close."""
        self._stopping.set()

    async def close(self) -> None:
        # Even if never started (stopped while waiting for the database, the
        # schema or Kafka): a client never stopped warns "Unclosed AIOKafka..."
        # when collected. stop() is idempotent and safe before start().
        await self._consumer.stop()
        await self._producer.stop()
        await self._writer.close()
        self._started = False

    def readiness(self) -> tuple[bool, str]:
        if not self._started:
            return False, "starting"
        if not self._db_ok:
            detail = "database unavailable (retrying)"
            if self._db_down_since is not None:
                since = datetime.fromtimestamp(self._db_down_since, UTC)
                detail += f" since {since:%Y-%m-%dT%H:%M:%SZ}"
            if self._hold is not None:
                detail += ", partitions paused"
            return False, detail
        return True, "consuming"

    def _outage_seconds(self) -> float:
        """Seconds the database has not taken this processor's writes (0 while it does)."""
        return 0.0 if self._db_down_since is None else max(time.time() - self._db_down_since, 0.0)

    # one batch --------------------------------------------------------------

    async def refresh_registry(self) -> None:
        """Reload the registry snapshot (sensors and cities) that enrichment reads."""
        cities = await self._writer.registered_cities()
        sensors = await self._writer.sensor_cities()
        first = self._registry_loaded_at == -math.inf
        self._pipeline.directory.replace(sensors, cities)
        self._pipeline.directory.take_misses()
        self._not_registered.clear()
        self._not_registered_cities.clear()
        self._registry_loaded_at = time.monotonic()
        log.debug("registry: %d sensors, %d cities", len(sensors), len(cities))
        if first and self._settings.lorawan_city not in cities:
            log.warning(
                "NAKHON_PROCESSOR_LORAWAN_CITY=%r is not a registered city: readings of "
                "LoRaWAN devices missing from the sensor registry are dead-lettered "
                "(unknown_city)",
                self._settings.lorawan_city,
            )

    async def _look_up_misses(self) -> bool:
        """Ask the database about the sensors and cities this batch found unregistered.

        Returns True when it knew some of them (the snapshot was behind). Names
        looked up and not found are not asked again until the next full refresh.
        """
        directory = self._pipeline.directory
        sensors, cities = directory.take_misses()
        sensors -= self._not_registered
        cities -= self._not_registered_cities
        if not sensors and not cities:
            return False
        try:
            found, found_cities = await self._writer.registry_entries(sensors, cities)
        except psycopg.Error as exc:
            log.warning("registry look-up failed (%s); using the last snapshot", exc)
            return False
        self._not_registered |= sensors - found.keys()
        self._not_registered_cities |= cities - found_cities
        if not found and not found_cities:
            return False
        directory.merge(found, found_cities)
        return True

    async def process(self, batch: KafkaBatch) -> None:
        """Make ``batch`` durable, then commit its offsets.

        Should it wait long (a failure retried, or past ``_HOLD_AFTER_S``), it
        holds its partitions (:meth:`_hold_partitions`) until it is committed.
        """
        hold_after = min(_HOLD_AFTER_S, self._kafka.max_poll_interval_ms / 4000)
        hold_timer = asyncio.get_running_loop().call_later(hold_after, self._hold_partitions)
        self._in_batch = True
        try:
            await self._make_durable(batch)
        finally:
            self._in_batch = False
            hold_timer.cancel()
            held = await self._end_hold()
        await self._commit({tp: msgs[-1].offset + 1 for tp, msgs in batch.items()})
        if held:
            self._resume_partitions()

    async def _make_durable(self, batch: KafkaBatch) -> None:
        """Judge, store and publish ``batch``: all but its commit."""
        if time.monotonic() - self._registry_loaded_at > self._settings.registry_refresh_s:
            try:
                await self.refresh_registry()
            except psycopg.Error as exc:
                log.warning("sensor registry not reloaded (%s); using the last snapshot", exc)
        records = [decode_raw_record(m) for msgs in batch.values() for m in msgs]
        self._metrics.records_consumed.inc(len(records))
        self._metrics.batch_records.observe(len(records))
        judged = self._pipeline.process_batch(records)
        if await self._look_up_misses():
            # Registered since the last refresh: judge the batch again with them.
            judged = self._pipeline.process_batch(records)
        outcome = await self._store(judged)
        await self._publish(outcome)
        self._account(outcome)

    async def _store(self, judged: BatchOutcome) -> BatchOutcome:
        """Write the batch's rows; returns the batch as stored (payloads the database refused
        become dead letters)."""
        delay = _BACKOFF_MIN_S
        while True:
            try:
                stored = await self._write_isolating(judged.outcomes)
                self._database_back()
                return BatchOutcome(stored)
            except psycopg.Error as exc:
                # Only "retry" errors reach here: _write_isolating absorbs data errors
                # (a login refused, 28000 or no SQLSTATE at all, is one of these).
                self._db_ok = False
                if self._db_down_since is None:
                    self._db_down_since = time.time()
                self._hold_partitions()
                transient = is_transient(exc)
                self._metrics.db_write_errors.labels("transient" if transient else "blocked").inc()
                if transient:
                    log.warning("database write failed (%s); retrying in %.1fs", exc, delay)
                else:
                    log.error(
                        "database write blocked (SQLSTATE %s: %s); nothing is committed, "
                        "retrying in %.1fs until it is fixed",
                        exc.sqlstate,
                        exc,
                        delay,
                    )
                await self._writer.close()
                await self._sleep_or_stop(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)

    def _database_back(self) -> None:
        if self._db_down_since is not None:
            log.info(
                "the database takes the writes again, after %.0f s",
                time.time() - self._db_down_since,
            )
            self._db_down_since = None
        self._db_ok = True

    async def _write_isolating(
        self, outcomes: tuple[RecordOutcome, ...]
    ) -> tuple[RecordOutcome, ...]:
        """Write ``outcomes``; on a data error, bisect down to the guilty records.

        Returns ``outcomes`` as stored: each guilty one replaced by its refusal.
        """
        readings = [r for o in outcomes for r in o.readings]
        positions = [p for o in outcomes for p in o.positions]
        if not readings and not positions:
            return outcomes
        started = time.perf_counter()
        try:
            result = await self._writer.write(readings, positions)
        except psycopg.Error as exc:
            if classify(exc) != "data":
                raise
            self._metrics.db_write_errors.labels("data").inc()
            if len(outcomes) == 1:
                return (self._refused(outcomes[0], exc),)
            half = len(outcomes) // 2
            first = await self._write_isolating(outcomes[:half])
            return first + await self._write_isolating(outcomes[half:])
        self._metrics.db_write_seconds.observe(time.perf_counter() - started)
        self._metrics.readings_stored.inc(result.readings_inserted)
        self._metrics.readings_duplicate.inc(len(readings) - result.readings_inserted)
        self._metrics.positions_stored.inc(result.positions_inserted)
        return outcomes

    @staticmethod
    def _refused(outcome: RecordOutcome, exc: psycopg.Error) -> RecordOutcome:
        """``outcome`` with none of its rows, and the database's refusal among its rejections."""
        log.error("the database refused a payload of %s: %s", outcome.record.mqtt_topic, exc)
        refusal = Rejection("storage_rejected", f"{exc.sqlstate}: {exc}"[:500], Stage.STORE)
        return dataclasses.replace(
            outcome,
            readings=(),
            positions=(),
            rejections=(*outcome.rejections, refusal),
            whole_rejection=True,
        )

    async def _publish(self, outcome: BatchOutcome) -> None:
        out: list[_Outgoing] = [
            (self._kafka.deadletter_topic, dead_letter_record(d), d) for d in outcome.dead_letters()
        ]
        if self._settings.publish_readings:
            # One record per sensor per batch (bounded): far fewer sends than one per payload.
            topic = self._kafka.readings_topic
            out += [(topic, r, None) for r in readings_records(outcome.readings)]
        delay = _BACKOFF_MIN_S
        while out:
            out, failure = await self._send_all(out)
            if failure is not None:
                log.warning("publishing to Kafka failed (%s); retrying in %.1fs", failure, delay)
                self._hold_partitions()
                await self._sleep_or_stop(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)

    async def _send_all(self, out: list[_Outgoing]) -> tuple[list[_Outgoing], KafkaError | None]:
        """Send every record, then wait for all deliveries (one batch, not one round trip each).

        Returns what is left to send, in order, and the error to back off for
        (None if there is none). A record too large for Kafka is never retried:
        a dead letter is replaced by its header-only form, anything else dropped
        with an error logged and counted. Other Kafka errors keep the record
        for the next try.
        """
        # What each record becomes for the next round: nothing once delivered.
        next_round: list[list[_Outgoing]] = [[] for _ in out]
        sent: list[tuple[int, asyncio.Future[object]]] = []
        failure: KafkaError | None = None
        for index, (topic, record, letter) in enumerate(out):
            try:
                delivery = await self._producer.send(
                    topic, record.value, key=record.key, headers=record.headers
                )
            except MessageSizeTooLargeError as exc:
                next_round[index] = self._too_large(topic, record, letter, exc)
                continue
            except KafkaError as exc:
                # Kafka is away: do not wait for it once per record.
                failure = exc
                for rest in range(index, len(out)):
                    next_round[rest] = [out[rest]]
                break
            sent.append((index, delivery))
        results = await asyncio.gather(*(d for _, d in sent), return_exceptions=True)
        for (index, _), result in zip(sent, results, strict=True):
            if isinstance(result, MessageSizeTooLargeError):  # the broker's own limit
                next_round[index] = self._too_large(*out[index], result)
            elif isinstance(result, KafkaError):
                failure = failure or result
                next_round[index] = [out[index]]
            elif isinstance(result, BaseException):
                raise result
        return [item for items in next_round for item in items], failure

    def _too_large(
        self, topic: str, record: OutRecord, letter: DeadLetter | None, exc: KafkaError
    ) -> list[_Outgoing]:
        if letter is not None:
            log.warning(
                "a %d-byte dead letter of %r is too large for Kafka (%s); sending its headers only",
                record.size,
                letter.record.mqtt_topic[:120],
                exc,
            )
            return [(topic, header_only_dead_letter(letter), None)]
        log.error(
            "a %d-byte record for %s keyed %r is too large for Kafka even so (%s); not sent",
            record.size,
            topic,
            record.key[:120].decode("utf-8", "replace"),
            exc,
        )
        self._metrics.records_unpublishable.labels(topic).inc()
        return []

    def _account(self, outcome: BatchOutcome) -> None:
        m = self._metrics
        now = time.time()
        newest: dict[str, float] = {}
        for o in outcome.outcomes:
            for rej in o.rejections:
                m.rejections.labels(rej.reason, rej.stage.value).inc()
            if o.unknown_metrics:
                m.unknown_metrics.inc(len(o.unknown_metrics))
            if o.readings:
                received = o.record.received_at.timestamp()
                m.end_to_end_seconds.observe(now - received)
                first = o.readings[0]
                m.clock_offset_seconds.observe(received - first.time.timestamp())
                for r in o.readings:
                    t = r.time.timestamp()
                    if t > newest.get(r.city, 0.0):
                        newest[r.city] = t
        for city, t in newest.items():
            if t > self._city_newest.get(city, 0.0):
                self._city_newest[city] = t
                m.city_last_reading.labels(city).set(t)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._consumer.commit(offsets)
            self._metrics.commits.labels("ok").inc()
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced while we worked: the partition's new owner
            # replays from the last commit, and the unique key makes that safe.
            self._metrics.commits.labels("failed").inc()
            log.warning("offset commit refused after a rebalance (%s); the batch will replay", exc)
            return
        for tp, next_offset in offsets.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                self._metrics.consumer_lag.labels(str(tp.partition)).set(
                    max(highwater - next_offset, 0)
                )

    # holding the partitions of a waiting batch ------------------------------

    def _hold_partitions(self) -> None:
        """Keep this member in the group while the batch waits (module docstring).

        aiokafka counts the time since the last ``getmany`` ended against
        ``max_poll_interval_ms`` (its heartbeat task leaves the group past it);
        its heartbeats alone do not keep the member. A no-op outside a batch or
        while already held.
        """
        if self._in_batch and self._hold is None:
            self._hold_ends.clear()
            self._hold = asyncio.create_task(self._poll_paused(), name="processor-hold")

    async def _poll_paused(self) -> None:
        consumer = self._consumer
        log.info("the batch waits: its partitions are paused and polled, so the group keeps them")
        while not self._hold_ends.is_set():
            # Every time: a rebalance gives partitions unpaused (new ones, and ours again).
            consumer.pause(*consumer.assignment())
            self._metrics.partitions_paused.set(len(consumer.paused()))
            try:
                came = await consumer.getmany(
                    timeout_ms=_HOLD_POLL_MS, max_records=self._settings.batch_max_records
                )
            except KafkaError as exc:
                log.warning("polling while the batch waits failed (%s); polling again", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hold_ends.wait(), _HOLD_POLL_MS / 1000)
                continue
            for partition, records in came.items():
                self._give_back(partition, records[0].offset)

    def _give_back(self, partition: TopicPartition, first_offset: int) -> None:
        """Records polled while the batch waits, of a partition assigned during that poll:
        back to the first, read again once the batch is committed. Nothing is skipped."""
        try:
            self._consumer.seek(partition, first_offset)
            self._consumer.pause(partition)
        except IllegalStateError:
            return  # no longer ours: its new owner starts from the last commit
        log.info(
            "records of partition %d came while paused; back to offset %d",
            partition.partition,
            first_offset,
        )

    async def _end_hold(self) -> bool:
        """Stop the polls of a held batch (the partitions stay paused); True if it was held."""
        hold, self._hold = self._hold, None
        if hold is None:
            return False
        self._hold_ends.set()
        # Shielded: a getmany cancelled midway leaves aiokafka counting a poll in progress.
        await asyncio.shield(hold)
        return True

    def _resume_partitions(self) -> None:
        paused = self._consumer.paused()
        self._consumer.resume(*paused)
        self._metrics.partitions_paused.set(0)
        log.info("the batch is committed: %d partitions resumed", len(paused))

    async def _sleep_or_stop(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            return
        raise ShuttingDown
