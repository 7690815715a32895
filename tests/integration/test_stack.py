"""The local stack itself: each service answers with its real protocol."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import uuid

import paho.mqtt.client as mqtt
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from nakhon.identity import provision
from nakhon.identity.roles import bridge_identity, gateway_identity
from tests.integration.conftest import REPO, STACK_SCRIPT, Stack
from tools.sandbox import broker_admin


def test_mqtt_qos1_round_trip_between_a_bridge_and_a_gateway(stack: Stack) -> None:
    name = f"t{uuid.uuid4().hex[:10]}"
    topic = f"{name}/{uuid.uuid4().hex}"
    gateway = gateway_identity(name, name, [f"{name}/#"])
    bridge = bridge_identity(name, [f"{name}/#"])
    with broker_admin() as admin:
        gw_creds, bridge_creds = provision.create(admin, [(gateway, None), (bridge, None)])
    got: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()
    received = threading.Event()

    def on_subscribe(
        client: mqtt.Client, userdata: object, mid: int, reasons: list[ReasonCode], props: object
    ) -> None:
        if not any(r.is_failure for r in reasons):
            subscribed.set()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg)
        received.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, gw_creds.clientid or "", protocol=mqtt.MQTTv5)
    sub.username_pw_set(gw_creds.username, gw_creds.password)
    sub.on_subscribe = on_subscribe
    sub.on_message = on_message
    sub.connect(stack.mqtt_host, stack.mqtt_port)
    sub.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.username_pw_set(bridge_creds.username, bridge_creds.password)
    pub.connect(stack.mqtt_host, stack.mqtt_port)
    pub.loop_start()
    try:
        sub.subscribe(f"$share/{name}/{topic}", qos=1)
        assert subscribed.wait(5)
        info = pub.publish(topic, b"\x00hello\xff", qos=1)
        info.wait_for_publish(5)
        assert info.is_published()
        assert received.wait(5)
        assert got[0].payload == b"\x00hello\xff"
        assert got[0].qos == 1
    finally:
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()
        with broker_admin() as admin:
            provision.revoke(admin, gateway)
            provision.revoke(admin, bridge)


async def test_kafka_produce_consume_round_trip(stack: Stack) -> None:
    key = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            "nakhon.deadletter", b"payload", key=key, headers=[("reason", b"test")]
        )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition("nakhon.deadletter", meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        batch = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=5000), 10)
        records = batch[tp]
        assert records[0].key == key
        assert records[0].value == b"payload"
        assert list(records[0].headers) == [("reason", b"test")]
    finally:
        await consumer.stop()


async def test_the_three_topics_exist_with_several_partitions(stack: Stack) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        names = ("nakhon.raw", "nakhon.readings", "nakhon.deadletter")
        counts = {t: len(await producer.partitions_for(t)) for t in names}
    finally:
        await producer.stop()
    assert all(n >= 3 for n in counts.values()), counts


def test_hypertable_created_and_queried(stack: Stack) -> None:
    table = f"stack_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        try:
            conn.execute(f"CREATE TABLE {table} (time timestamptz NOT NULL, v double precision)")
            conn.execute("SELECT create_hypertable(%s, 'time')", (table,))
            conn.execute(
                f"INSERT INTO {table} VALUES ('2026-01-01T00:00Z', 1), ('2026-01-01T00:30Z', 3)"
            )
            row = conn.execute(
                f"SELECT time_bucket('1 hour', time), avg(v) FROM {table} GROUP BY 1"
            ).fetchone()
            assert row is not None and row[1] == 2.0
            chunks = conn.execute(
                "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = %s",
                (table,),
            ).fetchone()
            assert chunks is not None and chunks[0] >= 1
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def test_stack_up_twice_is_harmless(stack: Stack) -> None:
    pids_before = sorted((REPO / ".nakhon" / "run").glob("*.pid"))
    contents = {p.name: p.read_text() for p in pids_before}
    for _ in range(2):
        done = subprocess.run([str(STACK_SCRIPT), "up"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    after = {p.name: p.read_text() for p in (REPO / ".nakhon" / "run").glob("*.pid")}
    assert after == contents, "a second `up` restarted a service"
    status = subprocess.run(
        [str(STACK_SCRIPT), "status"], capture_output=True, text=True, check=True
    ).stdout
    assert "TimescaleDB" in status and "edition" in status
    assert status.count("running") >= 3
