"""Second chances through the real stack: dead letters counted and replayed, raw ranges replayed.

Each test runs ``nakhon deadletters`` and ``nakhon replay`` as an operator
would, as subprocesses pointed at its namespace's topics
(NAKHON_KAFKA_RAW_TOPIC, NAKHON_KAFKA_DEADLETTER_TOPIC), beside a gateway and
a processor of the namespace.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from nakhon.kafka_client import kafka_producer_options
from tests.integration.conftest import REPO, Stack
from tests.integration.pipeline_harness import (
    PipelineNamespace,
    Publisher,
    count_rows,
    owner_dsn,
    senml,
    settle,
    wait_for,
)

READINGS = 5


@pytest.fixture
async def ns(stack: Stack) -> AsyncIterator[PipelineNamespace]:
    namespace = PipelineNamespace()
    await namespace.prepare()
    register(f"{namespace.name}-known")
    yield namespace
    namespace.stop_all()
    with psycopg.connect(owner_dsn()) as conn:
        conn.execute("DELETE FROM readings WHERE sensor_id LIKE %s", (namespace.name + "%",))
        conn.execute("DELETE FROM sensors WHERE sensor_id LIKE %s", (namespace.name + "%",))


@pytest.fixture
def publisher(ns: PipelineNamespace) -> Iterator[Publisher]:
    pub = Publisher(ns.publisher_credentials)
    yield pub
    pub.close()


def register(*sensor_ids: str) -> None:
    """Register sensors in Khon Kaen as the operator would (one transaction)."""
    with psycopg.connect(owner_dsn()) as conn:
        for sensor_id in sensor_ids:
            conn.execute(
                "INSERT INTO sensors (sensor_id, city, kind, source)"
                " VALUES (%s, 'khon_kaen', 'air_quality', 'registry')",
                (sensor_id,),
            )


def nakhon(ns: PipelineNamespace, *args: str) -> subprocess.CompletedProcess[str]:
    """``nakhon <args>`` on the namespace's topics; fails the test on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", "nakhon.cli", *args],
        env=ns.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def readings(sensor_id: str) -> list[tuple[datetime, float]]:
    with psycopg.connect(owner_dsn()) as conn:
        rows = conn.execute(
            "SELECT time, value FROM readings WHERE sensor_id = %s AND metric = 'pm2_5'"
            " ORDER BY time",
            (sensor_id,),
        ).fetchall()
    return [(t, v) for t, v in rows]


def stream(topic: str, start: datetime, first_value: float) -> list[tuple[str, bytes]]:
    return [
        (topic, senml("pm25", first_value + i, (start + timedelta(minutes=i)).timestamp()))
        for i in range(READINGS)
    ]


async def test_dead_letters_of_an_unregistered_sensor_are_stored_once_it_is_registered(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    await ns.gateway().start_and_wait()
    processor = ns.processor()
    processor.env["NAKHON_PROCESSOR_STRICT_SENSORS"] = "true"
    processor.env["NAKHON_PROCESSOR_REGISTRY_REFRESH_S"] = "0.5"
    await processor.start_and_wait()
    late, probe = f"{ns.name}-late", f"{ns.name}-probe"
    late_topic = ns.topic("khon_kaen", late, "senml")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    publisher.publish_all(stream(late_topic, start, 10.0))
    # Published means in the raw topic (the gateway acknowledges after Kafka);
    # settled means the processor committed past it, its dead letters sent.
    await settle(ns, publisher, [ns.topic("khon_kaen", f"{ns.name}-known", "senml")])
    assert count_rows(late) == 0

    stats = json.loads(nakhon(ns, "deadletters", "stats", "--json").stdout)
    assert stats["by_reason"] == {"unknown_sensor": READINGS}
    assert stats["by_sensor"] == {late: READINGS}
    assert stats["by_stage"] == {"enrich": READINGS}
    shown = nakhon(ns, "deadletters", "show", "--sensor", late, "--limit", "2").stdout
    assert shown.count("unknown_sensor (stage enrich)") == 2

    register(late, probe)
    # The probe's marker stored: the processor's registry has both sensors.
    await settle(ns, publisher, [ns.topic("khon_kaen", probe, "senml")])

    wait = ["--wait", "--wait-timeout", "60"]
    first = nakhon(ns, "replay", "deadletters", "--reason", "unknown_sensor", *wait)
    assert f"sent {READINGS} to {ns.raw_topic}; rows are idempotent" in first.stdout
    # --wait returned: the processors committed past every replayed record.
    assert (
        f"sent {READINGS}, stored or already stored {READINGS}, rejected again 0\n" in first.stdout
    ), first.stdout
    assert "waiting for consumer group" in first.stderr
    await wait_for(lambda: count_rows(late) == READINGS, 60, "the replayed readings stored")
    await wait_for(ns.caught_up, 30, "the replayed records processed")
    expected = [(start + timedelta(minutes=i), 10.0 + i) for i in range(READINGS)]
    assert readings(late) == expected  # exactly them: their own times and values

    second = nakhon(ns, "replay", "deadletters", "--reason", "unknown_sensor")
    assert f"sent {READINGS} to {ns.raw_topic}" in second.stdout
    await wait_for(ns.caught_up, 30, "the second replay processed")
    assert readings(late) == expected  # nothing new
    again = json.loads(nakhon(ns, "deadletters", "stats", "--json").stdout)
    assert again["by_reason"] == {"unknown_sensor": READINGS}  # none rejected again

    # Letters whose cause is not fixed: every replayed record is rejected again.
    never = f"{ns.name}-never"
    publisher.publish_all(stream(ns.topic("khon_kaen", never, "senml"), start, 60.0))
    await settle(ns, publisher, [ns.topic("khon_kaen", probe, "senml")])
    still = nakhon(ns, "replay", "deadletters", "--sensor", never, *wait)
    assert (
        f"sent {READINGS}, stored or already stored 0, rejected again {READINGS}"
        f" (by reason: unknown_sensor {READINGS})\n" in still.stdout
    ), still.stdout
    assert count_rows(never) == 0


async def test_a_dry_run_sends_nothing_and_letters_without_bytes_are_skipped(
    ns: PipelineNamespace,
) -> None:
    producer = AIOKafkaProducer(**kafka_producer_options(ns.kafka))
    await producer.start()
    try:
        topic = ns.topic("khon_kaen", f"{ns.name}-big", "senml").encode()
        await producer.send_and_wait(
            ns.deadletter_topic,
            value=b"",
            key=topic,
            headers=[
                ("mqtt_topic", topic),
                ("received_at", b"1795849802412345"),
                ("reason", b"payload_too_large"),
                ("detail", b"2000000 bytes"),
                ("stage", b"ingest"),
            ],
        )
    finally:
        await producer.stop()
    dry = nakhon(ns, "replay", "deadletters", "--dry-run")
    assert re.search(r"^  skipped_no_payload +1$", dry.stdout, re.MULTILINE), dry.stdout
    assert "dry run: would send 0" in dry.stdout
    assert await ns.consumer_lag() == 0  # no group yet: the raw topic's length, still 0


async def test_a_raw_replay_touches_only_its_time_range_and_topic_filter(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    await ns.gateway().start_and_wait()
    await ns.processor().start_and_wait()
    inside, beside, after = (f"{ns.name}-{s}" for s in ("inside", "beside", "after"))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    since = datetime.now(UTC)
    publisher.publish_all(
        stream(ns.topic("khon_kaen", inside, "senml"), start, 20.0)
        + stream(ns.topic("khon_kaen", beside, "senml"), start, 30.0)
    )
    # Acknowledged by the gateway only once Kafka has them: stamped before now.
    until = datetime.now(UTC)
    publisher.publish_all(stream(ns.topic("khon_kaen", after, "senml"), start, 40.0))
    topics = [ns.topic("khon_kaen", s, "senml") for s in (inside, beside, after)]
    await settle(ns, publisher, topics)
    assert [count_rows(s, "pm2_5") for s in (inside, beside, after)] == [READINGS] * 3
    # Lose the rows (a decoder that read them wrong, say), then replay the range.
    with psycopg.connect(owner_dsn()) as conn:
        conn.execute("DELETE FROM readings WHERE sensor_id LIKE %s", (ns.name + "%",))

    window = ["--since", since.isoformat(), "--until", until.isoformat()]
    dry = nakhon(ns, "replay", "raw", *window, "--dry-run")
    assert f"dry run: would send {2 * READINGS} to {ns.raw_topic}" in dry.stdout
    only = f"{ns.root}/+/{inside}/#"
    done = nakhon(ns, "replay", "raw", *window, "--topic", only)
    assert f"sent {READINGS} to {ns.raw_topic}" in done.stdout
    await wait_for(lambda: count_rows(inside, "pm2_5") == READINGS, 60, "the range replayed")
    await wait_for(ns.caught_up, 30, "the replayed records processed")
    assert readings(inside) == [(start + timedelta(minutes=i), 20.0 + i) for i in range(READINGS)]
    assert count_rows(beside) == 0  # in the range, not under the filter
    assert count_rows(after) == 0  # under the filter's kind, after the range


async def test_an_unknown_metric_alias_added_then_replayed_is_stored_as_its_metric(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    await ns.gateway().start_and_wait()
    strict = ns.processor()
    strict.env["NAKHON_PROCESSOR_STRICT_METRICS"] = "true"
    await strict.start_and_wait()
    sensor = f"{ns.name}-known"  # registered: only the metric's name is unknown
    topic = ns.topic("khon_kaen", sensor, "senml")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    publisher.publish_all(
        [
            (topic, senml("pm_two_five", 50.0 + i, (start + timedelta(minutes=i)).timestamp()))
            for i in range(READINGS)
        ]
    )
    await settle(ns, publisher, [topic])
    assert readings(sensor) == []
    stats = json.loads(nakhon(ns, "deadletters", "stats", "--json").stdout)
    assert stats["by_reason"] == {"unknown_metric": READINGS}

    # The operator adds the alias: a restart with the setting, no code change.
    assert strict.terminate() == 0
    aliased = ns.processor()
    aliased.env["NAKHON_PROCESSOR_STRICT_METRICS"] = "true"
    aliased.env["NAKHON_PROCESSOR_METRIC_ALIASES"] = '{"pm_two_five": "pm2_5"}'
    await aliased.start_and_wait()

    done = nakhon(ns, "replay", "deadletters", "--reason", "unknown_metric")
    assert f"sent {READINGS} to {ns.raw_topic}" in done.stdout
    await wait_for(lambda: len(readings(sensor)) == READINGS, 60, "the aliased readings stored")
    await wait_for(ns.caught_up, 30, "the replayed records processed")
    assert readings(sensor) == [(start + timedelta(minutes=i), 50.0 + i) for i in range(READINGS)]
