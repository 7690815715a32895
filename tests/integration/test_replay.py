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

from nakhon.config import load_settings
from nakhon.kafka_client import kafka_producer_options
from nakhon.storage.rollup_range import refresh_rollups
from tests.integration.conftest import REPO, Stack
from tests.integration.pipeline_harness import (
    PipelineNamespace,
    Publisher,
    count_rows,
    owner_dsn,
    run_nakhon,
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
    done = run_nakhon(*args, env=ns.env())
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
    # Mosquitto's PUBACK does not wait for the gateway: settled (stored) means in
    # Kafka, so the range ends after them and their two markers.
    await settle(ns, publisher, [ns.topic("khon_kaen", s, "senml") for s in (inside, beside)])
    until = datetime.now(UTC)
    publisher.publish_all(stream(ns.topic("khon_kaen", after, "senml"), start, 40.0))
    await settle(ns, publisher, [ns.topic("khon_kaen", after, "senml")])
    assert [count_rows(s, "pm2_5") for s in (inside, beside, after)] == [READINGS] * 3
    # Lose the rows (a decoder that read them wrong, say), then replay the range.
    with psycopg.connect(owner_dsn()) as conn:
        conn.execute("DELETE FROM readings WHERE sensor_id LIKE %s", (ns.name + "%",))

    window = ["--since", since.isoformat(), "--until", until.isoformat()]
    dry = nakhon(ns, "replay", "raw", *window, "--dry-run")
    assert f"dry run: would send {2 * READINGS + 2} to {ns.raw_topic}" in dry.stdout
    only = f"{ns.root}/+/{inside}/#"
    done = nakhon(ns, "replay", "raw", *window, "--topic", only)
    assert f"sent {READINGS + 1} to {ns.raw_topic}" in done.stdout
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


def overwrite_counts(stdout: str, table: str = "readings") -> dict[str, int]:
    """The inserted/changed/unchanged counts of ``table`` in an overwrite's summary."""
    section = stdout.split(f"\n{table}:\n", 1)[1]
    counts = {}
    for name in ("inserted", "changed", "unchanged"):
        found = re.search(rf"^  {name} +([\d,]+)$", section, re.MULTILINE)
        assert found is not None, stdout
        counts[name] = int(found[1].replace(",", ""))
    return counts


def minute_averages(sensor_id: str) -> list[tuple[datetime, float]]:
    with psycopg.connect(owner_dsn()) as conn:
        rows = conn.execute(
            "SELECT bucket, avg FROM readings_1m WHERE sensor_id = %s AND metric = 'pm2_5'"
            " ORDER BY bucket",
            (sensor_id,),
        ).fetchall()
    return [(t, v) for t, v in rows]


async def test_raw_overwrite_updates_values_read_differently_in_its_range_only(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    await ns.gateway().start_and_wait()
    await ns.processor().start_and_wait()
    inside, after = f"{ns.name}-inside", f"{ns.name}-after"
    inside_topic = ns.topic("khon_kaen", inside, "senml")
    # On the minute: one reading per rollup minute, so each minute's avg is its value.
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    since = datetime.now(UTC)
    implausible = senml("pm25", -50.0, (start + timedelta(minutes=30)).timestamp())
    publisher.publish_all([*stream(inside_topic, start, 20.0), (inside_topic, implausible)])
    # Stored means in Kafka: the range ends after them and their settling marker
    # (a pm10 reading, stored and not altered below: unchanged).
    await settle(ns, publisher, [inside_topic])
    until = datetime.now(UTC)
    after_topic = ns.topic("khon_kaen", after, "senml")
    publisher.publish_all(stream(after_topic, start, 40.0))
    await settle(ns, publisher, [after_topic])
    expected = [(start + timedelta(minutes=i), 20.0 + i) for i in range(READINGS)]
    assert readings(inside) == expected
    # An old decoder that read every value ten times too high, as the rows it left.
    with psycopg.connect(owner_dsn()) as conn:
        conn.execute(
            "UPDATE readings SET value = value * 10 WHERE sensor_id = ANY(%s) AND metric = 'pm2_5'",
            ([inside, after],),
        )
    misread = [(t, v * 10) for t, v in expected]
    assert readings(inside) == misread
    # ... and rollups aggregated from them.
    await refresh_rollups(owner_dsn(), start, start + timedelta(minutes=READINGS))
    assert minute_averages(inside) == misread

    window = ["--since", since.isoformat(), "--until", until.isoformat()]
    dry = nakhon(ns, "replay", "raw", *window, "--overwrite", "--dry-run")
    assert overwrite_counts(dry.stdout) == {"inserted": 0, "changed": READINGS, "unchanged": 1}
    assert f"dry run: would insert 0 readings and change {READINGS}" in dry.stdout
    assert readings(inside) == misread  # rolled back

    done = nakhon(ns, "replay", "raw", *window, "--overwrite")
    assert re.search(r"^  read +7$", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"^  rejected +1$", done.stdout, re.MULTILINE), done.stdout
    assert overwrite_counts(done.stdout) == {"inserted": 0, "changed": READINGS, "unchanged": 1}
    assert re.search(r"^  out_of_range +1$", done.stdout, re.MULTILINE), done.stdout
    assert f"{READINGS} readings changed, 0 inserted, 1 unchanged" in done.stdout
    assert "rollups readings_1m, readings_1h over " in done.stdout
    assert "read 7/7 records" in done.stderr  # progress
    assert readings(inside) == expected  # the range follows the current decoder
    assert readings(after) == [(t, v * 10) for t, v in stream_values(start, 40.0)]  # not in it
    assert minute_averages(inside) == expected  # the rollups reflect the new values
    # Not dead-lettered by the overwrite: the processor's one letter only.
    stats = json.loads(nakhon(ns, "deadletters", "stats", "--json").stdout)
    assert stats["by_reason"] == {"out_of_range": 1}

    again = nakhon(ns, "replay", "raw", *window, "--overwrite")
    assert overwrite_counts(again.stdout) == {"inserted": 0, "changed": 0, "unchanged": 6}
    assert "rollups: nothing changed, nothing to refresh" in again.stdout
    assert readings(inside) == expected


def stream_values(start: datetime, first_value: float) -> list[tuple[datetime, float]]:
    return [(start + timedelta(minutes=i), first_value + i) for i in range(READINGS)]


async def test_the_writer_role_cannot_overwrite_stored_readings(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    """Least privilege holds: the processors' role updates no reading, by any route."""
    await ns.gateway().start_and_wait()
    await ns.processor().start_and_wait()
    sensor = f"{ns.name}-known"
    topic = ns.topic("khon_kaen", sensor, "senml")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    since = datetime.now(UTC)
    publisher.publish_all(stream(topic, start, 70.0))
    await settle(ns, publisher, [topic])
    until = datetime.now(UTC)
    with psycopg.connect(owner_dsn()) as conn:
        conn.execute(
            "UPDATE readings SET value = -1 WHERE sensor_id = %s AND metric = 'pm2_5'", (sensor,)
        )
    writer_dsn = load_settings().db.service_dsn("processor")
    attacks = [
        "UPDATE readings SET value = 0 WHERE sensor_id = %(s)s",
        "INSERT INTO readings (time, sensor_id, metric, value, city)"
        " SELECT time, sensor_id, metric, 0, city FROM readings WHERE sensor_id = %(s)s"
        " ON CONFLICT ON CONSTRAINT readings_key DO UPDATE SET value = excluded.value",
        "DELETE FROM readings WHERE sensor_id = %(s)s",
    ]
    for attack in attacks:
        with (
            psycopg.connect(writer_dsn) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(attack, {"s": sensor})
    # The command itself, pointed at the writer's credentials: refused, nothing changed.
    env = {**ns.env(), "NAKHON_DB_DSN": writer_dsn}
    window = ["--since", since.isoformat(), "--until", until.isoformat()]
    done = subprocess.run(
        [sys.executable, "-m", "nakhon.cli", "replay", "raw", *window, "--overwrite"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 5, done.stderr
    assert "permission denied" in done.stderr
    assert "stopped, database" in done.stderr
    assert [v for _t, v in readings(sensor)] == [-1.0] * READINGS
