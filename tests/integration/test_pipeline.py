"""The delivery guarantee, through real Mosquitto, Kafka and TimescaleDB.

A reading published over MQTT becomes exactly one row, whatever crashes.

No test sleeps before it counts: an exact count follows :func:`settle`
(markers behind the stream on its own partitions, then a zero consumer lag),
and the frozen-Kafka test waits until the gateway's producer logs a request
that timed out. Tests that freeze or kill something touch only their own: a
Kafka of their own, their processor's database sessions (by application_name).
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from nakhon.config import load_settings
from tests.integration.conftest import Stack
from tests.integration.pipeline_harness import (
    PipelineNamespace,
    Publisher,
    count_rows,
    owner_dsn,
    pm25_stream,
    senml,
    settle,
    wait_for,
)
from tools.sandbox import IsolatedKafka, Service


@pytest.fixture
async def ns(stack: Stack) -> AsyncIterator[PipelineNamespace]:
    namespace = PipelineNamespace()
    await namespace.prepare()
    yield namespace
    namespace.stop_all()


@pytest.fixture
def publisher(ns: PipelineNamespace) -> Iterator[Publisher]:
    pub = Publisher(ns.publisher_credentials)
    yield pub
    pub.close()


@pytest.fixture
async def own_kafka() -> AsyncIterator[IsolatedKafka]:
    """A Kafka of the test's own, to freeze: the stack's keeps serving everyone else."""
    kafka = IsolatedKafka()
    try:
        await kafka.start()
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
async def ns_own_kafka(stack: Stack, own_kafka: IsolatedKafka) -> AsyncIterator[PipelineNamespace]:
    namespace = PipelineNamespace(kafka=own_kafka.settings())
    await namespace.prepare()
    yield namespace
    namespace.stop_all()


async def started(ns: PipelineNamespace) -> PipelineNamespace:
    await ns.gateway().start_and_wait()
    await ns.processor().start_and_wait()
    return ns


def _pm25_rows(prefix: str) -> int:
    """The stream's rows (``pm25_stream`` sends pm25, stored as pm2_5), not the markers'."""
    return count_rows(prefix, metric="pm2_5")


async def test_a_senml_reading_becomes_one_row(ns: PipelineNamespace, publisher: Publisher) -> None:
    await started(ns)
    sensor = f"{ns.name}-pm1"
    t = 1_795_000_000.25  # 2026-11-18T09:46:40.25Z
    publisher.publish_all([(ns.topic("Khon_Kaen", sensor, "senml"), senml("pm25", 37.5, t))])
    await wait_for(lambda: count_rows(sensor) == 1, 30, "the row")
    with psycopg.connect(owner_dsn()) as conn:
        row = conn.execute(
            "SELECT time, sensor_id, metric, value, city FROM readings WHERE sensor_id = %s",
            (sensor,),
        ).fetchone()
        registered = conn.execute(
            "SELECT city, first_seen, last_seen FROM sensors WHERE sensor_id = %s", (sensor,)
        ).fetchone()
    assert row == (datetime.fromtimestamp(t, UTC), sensor, "pm2_5", 37.5, "khon_kaen")
    assert registered == ("khon_kaen", row[0], row[0])


async def test_the_same_payload_twice_is_one_row(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    await started(ns)
    sensor = f"{ns.name}-dup"
    topic = ns.topic("rayong", sensor, "senml")
    payload = senml("temperature", 31.0, 1_795_000_000, unit="Cel")
    publisher.publish_all([(topic, payload), (topic, payload)])
    await settle(ns, publisher, [topic])  # its marker is behind both copies, in their partition
    assert count_rows(sensor, metric="temperature") == 1


async def test_garbage_goes_to_deadletter_and_neighbours_are_stored(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    await started(ns)
    sensor = f"{ns.name}-ok"
    good_topic = ns.topic("phuket", sensor, "senml")
    bad_topic = ns.topic("phuket", f"{ns.name}-bad", "senml")
    publisher.publish_all(
        [
            (good_topic, senml("pm25", 10, 1_795_000_000)),
            (bad_topic, b"\x00\xffnot json at all"),
            (good_topic, senml("pm25", 11, 1_795_000_030)),
        ]
    )
    await settle(ns, publisher, [good_topic, bad_topic])
    assert _pm25_rows(sensor) == 2
    letters = await ns.all_dead_letters()
    assert len(letters) == 1
    letter = letters[0]
    assert letter["value"] == b"\x00\xffnot json at all"
    assert letter["mqtt_topic"] == bad_topic
    assert letter["stage"] == "decode"
    assert letter["reason"] == "malformed_json"
    assert letter["detail"]
    assert str(letter["received_at"]).isdigit()


async def test_an_out_of_range_value_is_rejected_alone(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    await started(ns)
    sensor = f"{ns.name}-mixed"
    topic = ns.topic("lampang", sensor, "json")
    payload = b'{"ts": 1795000000, "temperature": 31.5, "humidity": 140}'
    publisher.publish_all([(topic, payload)])
    await settle(ns, publisher, [topic])
    assert count_rows(sensor, metric="temperature") == 1
    assert count_rows(sensor, metric="humidity") == 0
    letters = await ns.all_dead_letters()
    assert [(x["reason"], x["partial"]) for x in letters] == [("out_of_range", "true")]


async def test_gateway_killed_mid_stream_loses_nothing(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    gateway = ns.gateway()
    await gateway.start_and_wait()
    await ns.processor().start_and_wait()
    prefix = f"{ns.name}-g"
    messages = pm25_stream(ns, prefix, 4000)
    first, second = messages[:2000], messages[2000:]
    publisher.publish_all(first[:500])
    await wait_for(lambda: count_rows(prefix) > 0, 30, "the first rows")
    infos = [publisher.publish(t, p) for t, p in first[500:]]
    gateway.kill()  # mid-stream: messages in flight, unacknowledged
    for info in infos:
        info.wait_for_publish(30)
    publisher.publish_all(second[:1000])  # published while no gateway runs
    await gateway.start_and_wait()
    publisher.publish_all(second[1000:])
    await settle(ns, publisher, {topic for topic, _ in messages})
    assert _pm25_rows(prefix) == 4000


async def test_processor_killed_mid_batch_loses_and_duplicates_nothing(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    ns.batch_max_records = 200
    await ns.gateway().start_and_wait()
    processor = ns.processor()
    await processor.start_and_wait()
    prefix = f"{ns.name}-p"
    messages = pm25_stream(ns, prefix, 6000)
    infos = [publisher.publish(t, p) for t, p in messages]
    await wait_for(lambda: count_rows(prefix) >= 400, 60, "some batches stored")
    processor.kill()  # between a DB commit and its offset commit, or mid-write
    for info in infos:
        info.wait_for_publish(30)
    stored_at_kill = count_rows(prefix)
    assert stored_at_kill < 6000, "the kill came too late to test anything"
    await processor.start_and_wait()
    await settle(ns, publisher, {topic for topic, _ in messages})
    with psycopg.connect(owner_dsn()) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (sensor_id, metric, time)) FROM readings"
            " WHERE sensor_id LIKE %s AND metric = 'pm2_5'",
            (prefix + "%",),
        ).fetchone()
    assert row == (6000, 6000)


async def test_sigterm_drains_and_exits_zero(ns: PipelineNamespace, publisher: Publisher) -> None:
    gateway, processor = ns.gateway(), ns.processor()
    await gateway.start_and_wait()
    await processor.start_and_wait()
    prefix = f"{ns.name}-s"
    publisher.publish_all(pm25_stream(ns, prefix, 500))
    await wait_for(lambda: count_rows(prefix) == 500, 60, "all rows")
    started_at = time.monotonic()
    assert gateway.terminate() == 0
    assert processor.terminate() == 0
    assert time.monotonic() - started_at < 15


ACKNOWLEDGED = "nakhon_gateway_messages_acknowledged_total"
INFLIGHT = "nakhon_gateway_inflight_messages"
#: What aiokafka's producer logs when a produce request times out (it then retries).
PRODUCE_TIMEOUT = "RequestTimedOutError"


def _log_count(service: Service, text: str) -> int:
    return service.log_path.read_text(errors="replace").count(text)


def _gateway_metric(gateway: Service, name: str) -> float:
    url = gateway.ready_url.replace("/readyz", "/metrics")
    with urllib.request.urlopen(url, timeout=2) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}")


async def test_no_puback_while_kafka_is_away_and_recovery_by_itself(
    ns_own_kafka: PipelineNamespace, own_kafka: IsolatedKafka
) -> None:
    """Kafka frozen (a broker of the test's own): the gateway holds every message unacknowledged."""
    ns = ns_own_kafka
    gateway = ns.gateway()
    await gateway.start_and_wait()
    await ns.processor().start_and_wait()
    publisher = Publisher(ns.publisher_credentials)
    try:
        prefix = f"{ns.name}-k"
        messages = pm25_stream(ns, prefix, 1200)
        publisher.publish_all(messages[:200])
        await wait_for(lambda: count_rows(prefix) == 200, 30, "the first 200 rows")
        acked, inflight = ACKNOWLEDGED, INFLIGHT
        await wait_for(lambda: _gateway_metric(gateway, acked) == 200, 10, "200 PUBACKs")
        timeouts_before = _log_count(gateway, PRODUCE_TIMEOUT)
        own_kafka.freeze()  # Kafka away: alive, its connections open, answering nothing
        try:
            publisher.publish_all(messages[200:])
            await wait_for(
                lambda: _gateway_metric(gateway, inflight) == 1000,
                10,
                "the gateway holding 1000 messages",
            )
            # The fact, not a pause: a produce request of the gateway's timed
            # out (15 s) and its producer retries. The idempotent producer never
            # fails the sends themselves (aiokafka retries them without end), so
            # its own warning is the one trace: the gateway's metrics and /readyz
            # do not change. Not one of the messages may have been acknowledged.
            await wait_for(
                lambda: _log_count(gateway, PRODUCE_TIMEOUT) > timeouts_before,
                60,
                f"the gateway's producer to log a {PRODUCE_TIMEOUT}",
            )
            assert _gateway_metric(gateway, acked) == 200, "a PUBACK left before Kafka had it"
            assert _gateway_metric(gateway, inflight) == 1000
        finally:
            own_kafka.thaw()
        await wait_for(lambda: count_rows(prefix) == 1200, 120, "all 1200 rows after Kafka is back")
        await wait_for(lambda: _gateway_metric(gateway, acked) == 1200, 30, "all PUBACKs")
        await wait_for(gateway.ready, 30, "the gateway ready again")
    finally:
        publisher.close()


async def test_a_payload_too_large_for_kafka_is_dead_lettered_and_the_flow_goes_on(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    await started(ns)
    sensor = f"{ns.name}-after"
    big_topic = ns.topic("lampang", f"{ns.name}-big", "senml")
    # Small enough for the broker (max_packet_size 1 MiB, the packet being the
    # payload, the topic and a few bytes), too large for a Kafka record (1 MiB
    # with key, headers and overhead): only the gateway can catch it.
    size = 1_048_576 - len(big_topic) - 60
    publisher.publish_all(
        [
            (big_topic, b"[" + b" " * (size - 2) + b"]"),
            (ns.topic("lampang", sensor, "senml"), senml("pm25", 41.0, 1_795_000_000)),
        ]
    )
    await wait_for(lambda: count_rows(sensor) == 1, 30, "the reading published after it")
    letters = await ns.dead_letters(expect=1)
    assert [(x["reason"], x["stage"], x["mqtt_topic"], x["value"]) for x in letters] == [
        ("payload_too_large", "ingest", big_topic, b"")
    ]
    assert str(letters[0]["detail"]).startswith(f"{size} bytes")


async def test_database_connections_killed_mid_stream_lose_nothing(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    ns.batch_max_records = 100
    await started(ns)
    prefix = f"{ns.name}-db"
    messages = pm25_stream(ns, prefix, 3000)
    infos = [publisher.publish(t, p) for t, p in messages]
    # As the processor's own role: a role may end its own sessions, and no
    # other role here (the owner included) may end the writer's. Only this
    # namespace's processor's sessions: the stack's processor runs on.
    writer_dsn = load_settings().db.service_dsn("processor")
    with psycopg.connect(writer_dsn, autocommit=True) as admin:

        def kill_processor_connections() -> bool:
            row = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (ns.db_application_name,),
            ).fetchone()
            return row is not None and row[0] >= 1

        for rows in (300, 600, 900):  # three times, with rows flowing in between
            await wait_for(lambda rows=rows: count_rows(prefix) > rows, 60, "rows to flow")  # type: ignore[misc]
            # (right after a kill the processor may still be backing off: wait for it)
            await wait_for(kill_processor_connections, 30, "a processor connection to kill")
    for info in infos:
        info.wait_for_publish(30)
    await settle(ns, publisher, {topic for topic, _ in messages})
    assert _pm25_rows(prefix) == 3000
    assert await ns.all_dead_letters() == []
