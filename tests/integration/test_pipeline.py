"""The delivery guarantee, through real Mosquitto, Kafka and TimescaleDB.

A reading published over MQTT becomes exactly one row, whatever crashes.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from nakhon.config import load_settings
from tests.integration.conftest import REPO, Stack
from tests.integration.pipeline_harness import (
    PipelineNamespace,
    Publisher,
    count_rows,
    owner_dsn,
    senml,
    wait_until,
)
from tools.sandbox import Service


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


def started(ns: PipelineNamespace) -> PipelineNamespace:
    ns.gateway().start()
    ns.processor().start()
    return ns


async def test_a_senml_reading_becomes_one_row(ns: PipelineNamespace, publisher: Publisher) -> None:
    started(ns)
    sensor = f"{ns.name}-pm1"
    t = 1_795_000_000.25  # 2026-11-18T09:46:40.25Z
    publisher.publish_all([(ns.topic("Khon_Kaen", sensor, "senml"), senml("pm25", 37.5, t))])
    wait_until(lambda: count_rows(sensor) == 1, 30, "the row")
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
    started(ns)
    sensor = f"{ns.name}-dup"
    topic = ns.topic("rayong", sensor, "senml")
    payload = senml("temperature", 31.0, 1_795_000_000, unit="Cel")
    publisher.publish_all([(topic, payload), (topic, payload)])
    marker = f"{ns.name}-marker"
    publisher.publish_all([(ns.topic("rayong", marker, "senml"), senml("pm10", 1, 1_795_000_000))])
    wait_until(lambda: count_rows(marker) == 1, 30, "the marker row after both copies")
    assert count_rows(sensor) == 1


async def test_garbage_goes_to_deadletter_and_neighbours_are_stored(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    started(ns)
    sensor = f"{ns.name}-ok"
    bad_topic = ns.topic("phuket", f"{ns.name}-bad", "senml")
    publisher.publish_all(
        [
            (ns.topic("phuket", sensor, "senml"), senml("pm25", 10, 1_795_000_000)),
            (bad_topic, b"\x00\xffnot json at all"),
            (ns.topic("phuket", sensor, "senml"), senml("pm25", 11, 1_795_000_030)),
        ]
    )
    wait_until(lambda: count_rows(sensor) == 2, 30, "the two good rows")
    letters = await ns.dead_letters(expect=1)
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
    started(ns)
    sensor = f"{ns.name}-mixed"
    payload = b'{"ts": 1795000000, "temperature": 31.5, "humidity": 140}'
    publisher.publish_all([(ns.topic("lampang", sensor, "json"), payload)])
    wait_until(lambda: count_rows(sensor) == 1, 30, "the good value's row")
    letters = await ns.dead_letters(expect=1)
    assert [(x["reason"], x["partial"]) for x in letters] == [("out_of_range", "true")]


def _stream(ns: PipelineNamespace, prefix: str, n: int) -> list[tuple[str, bytes]]:
    """n readings from 50 sensors, each with its own time (replays must dedupe)."""
    base = 1_795_000_000
    return [
        (
            ns.topic("chiang_mai", f"{prefix}{i % 50}", "senml"),
            senml("pm25", float(i % 500), base + i // 50),
        )
        for i in range(n)
    ]


async def test_gateway_killed_mid_stream_loses_nothing(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    gateway = ns.gateway()
    gateway.start()
    ns.processor().start()
    prefix = f"{ns.name}-g"
    messages = _stream(ns, prefix, 4000)
    first, second = messages[:2000], messages[2000:]
    publisher.publish_all(first[:500])
    wait_until(lambda: count_rows(prefix) > 0, 30, "the first rows")
    infos = [publisher.publish(t, p) for t, p in first[500:]]
    gateway.kill()  # mid-stream: messages in flight, unacknowledged
    for info in infos:
        info.wait_for_publish(30)
    publisher.publish_all(second[:1000])  # published while no gateway runs
    gateway.start()
    publisher.publish_all(second[1000:])
    wait_until(lambda: count_rows(prefix) >= 4000, 90, "all 4000 rows")
    time.sleep(1)
    assert count_rows(prefix) == 4000


async def test_processor_killed_mid_batch_loses_and_duplicates_nothing(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    ns.batch_max_records = 200
    ns.gateway().start()
    processor = ns.processor()
    processor.start()
    prefix = f"{ns.name}-p"
    messages = _stream(ns, prefix, 6000)
    infos = [publisher.publish(t, p) for t, p in messages]
    wait_until(lambda: count_rows(prefix) >= 400, 60, "some batches stored")
    processor.kill()  # between a DB commit and its offset commit, or mid-write
    for info in infos:
        info.wait_for_publish(30)
    stored_at_kill = count_rows(prefix)
    assert stored_at_kill < 6000, "the kill came too late to test anything"
    processor.start()
    wait_until(lambda: count_rows(prefix) >= 6000, 90, "all 6000 rows")
    time.sleep(1)
    with psycopg.connect(owner_dsn()) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (sensor_id, metric, time)) FROM readings"
            " WHERE sensor_id LIKE %s",
            (prefix + "%",),
        ).fetchone()
    assert row == (6000, 6000)


async def test_sigterm_drains_and_exits_zero(ns: PipelineNamespace, publisher: Publisher) -> None:
    gateway, processor = ns.gateway(), ns.processor()
    gateway.start()
    processor.start()
    prefix = f"{ns.name}-s"
    publisher.publish_all(_stream(ns, prefix, 500))
    wait_until(lambda: count_rows(prefix) == 500, 60, "all rows")
    started_at = time.monotonic()
    assert gateway.terminate() == 0
    assert processor.terminate() == 0
    assert time.monotonic() - started_at < 15


def _gateway_metric(gateway: Service, name: str) -> float:
    url = gateway.ready_url.replace("/readyz", "/metrics")
    with urllib.request.urlopen(url, timeout=2) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}")


async def test_no_puback_while_kafka_is_away_and_recovery_by_itself(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    gateway = ns.gateway()
    gateway.start()
    ns.processor().start()
    prefix = f"{ns.name}-k"
    messages = _stream(ns, prefix, 1200)
    publisher.publish_all(messages[:200])
    wait_until(lambda: count_rows(prefix) == 200, 30, "the first 200 rows")
    acked = "nakhon_gateway_messages_acknowledged_total"
    wait_until(lambda: _gateway_metric(gateway, acked) == 200, 10, "200 PUBACKs")
    kafka = int((REPO / ".nakhon" / "run" / "kafka.pid").read_text())
    os.kill(kafka, signal.SIGSTOP)  # Kafka away: alive but answering nothing
    try:
        publisher.publish_all(messages[200:])
        wait_until(
            lambda: _gateway_metric(gateway, "nakhon_gateway_inflight_messages") == 1000,
            10,
            "the gateway holding 1000 messages",
        )
        # Kafka answers nothing for a while: the producer keeps retrying, and
        # not one of the messages it holds may be acknowledged meanwhile.
        time.sleep(8)
        assert _gateway_metric(gateway, acked) == 200, "a PUBACK left before Kafka had it"
        assert _gateway_metric(gateway, "nakhon_gateway_inflight_messages") == 1000
    finally:
        os.kill(kafka, signal.SIGCONT)
    wait_until(lambda: count_rows(prefix) == 1200, 120, "all 1200 rows after Kafka is back")
    wait_until(lambda: _gateway_metric(gateway, acked) == 1200, 30, "all PUBACKs")


async def test_a_payload_too_large_for_kafka_is_dead_lettered_and_the_flow_goes_on(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    started(ns)
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
    wait_until(lambda: count_rows(sensor) == 1, 30, "the reading published after it")
    letters = await ns.dead_letters(expect=1)
    assert [(x["reason"], x["stage"], x["mqtt_topic"], x["value"]) for x in letters] == [
        ("payload_too_large", "ingest", big_topic, b"")
    ]
    assert str(letters[0]["detail"]).startswith(f"{size} bytes")


async def test_database_connections_killed_mid_stream_lose_nothing(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    ns.batch_max_records = 100
    started(ns)
    prefix = f"{ns.name}-db"
    messages = _stream(ns, prefix, 3000)
    infos = [publisher.publish(t, p) for t, p in messages]
    # As the processor's own role: a role may end its own sessions, and no
    # other role here (the owner included) may end the writer's.
    writer_dsn = load_settings().db.service_dsn("processor")
    with psycopg.connect(writer_dsn, autocommit=True) as admin:

        def kill_processor_connections() -> bool:
            row = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'nakhon-processor'"
            ).fetchone()
            return row is not None and row[0] >= 1

        for rows in (300, 600, 900):  # three times, with rows flowing in between
            wait_until(lambda rows=rows: count_rows(prefix) > rows, 60, "rows to flow")  # type: ignore[misc]
            # (right after a kill the processor may still be backing off: wait for it)
            wait_until(kill_processor_connections, 30, "a processor connection to kill")
    for info in infos:
        info.wait_for_publish(30)
    wait_until(lambda: count_rows(prefix) >= 3000, 90, "all 3000 rows")
    time.sleep(1)
    assert count_rows(prefix) == 3000
    assert await ns.dead_letters(expect=1, wait_s=2) == []
