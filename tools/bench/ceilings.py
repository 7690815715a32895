"""The raw ceilings of this machine, measured with the clients Nakhon itself uses.

Each figure is one stage alone, so the end-to-end rate reads as a ratio to the
slowest part: Mosquitto alone, twice (with its own C clients, the broker's
limit; and with a paho QoS 1 publisher and subscriber, the limit of the Python
client library the gateway is built on), Kafka produce alone (aiokafka with the
gateway's producer settings), and binary COPY into ``readings`` alone (the
processor's own :class:`ReadingWriter`).
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
from aiokafka import AIOKafkaProducer
from paho.mqtt.enums import CallbackAPIVersion

from nakhon.config import KafkaSettings
from nakhon.domain.records import Reading
from nakhon.identity.provision import Credentials
from nakhon.kafka_client import kafka_producer_options
from nakhon.storage.writer import ReadingWriter
from tools.bench.mqtt_logins import Broker, c_client_env

#: A registered city (migrations seed it): readings of unregistered cities are refused.
BENCH_CITY = "khon_kaen"
PAYLOAD = b'[{"bn":"bench:","bt":1795000000.123456,"n":"pm2_5","u":"ug/m3","v":37.5}]'


def mosquitto_c_ceiling(messages: int, broker: Broker, topic_root: str = "nakhon-bench") -> float:
    """QoS 1 messages/s through Mosquitto between its own C clients (mosquitto_pub/_sub)."""
    topic = f"{topic_root}/{uuid.uuid4().hex}"
    sub_topic = f"$share/{broker.share_group}/{topic}" if broker.share_group else topic
    with c_client_env(broker) as env:
        sub = subprocess.Popen(  # noqa: S603  (fixed command line)
            ["/usr/bin/mosquitto_sub", "-q", "1", "-t", sub_topic, "-C", str(messages)],
            stdout=subprocess.DEVNULL,
            env=env,
        )
        try:
            time.sleep(0.5)  # let the subscription settle before the clock starts
            lines = b"\n".join([PAYLOAD] * messages) + b"\n"
            started = time.perf_counter()
            subprocess.run(  # noqa: S603
                ["/usr/bin/mosquitto_pub", "-q", "1", "-t", topic, "-l"],
                input=lines,
                check=True,
                timeout=120,
                env=env,
            )
            sub.wait(120)
            return messages / (time.perf_counter() - started)
        finally:
            if sub.poll() is None:
                sub.kill()
                sub.wait()


def mosquitto_ceiling(messages: int, broker: Broker, topic_root: str = "nakhon-bench") -> float:
    """QoS 1 messages/s through Mosquitto from one paho publisher to one paho subscriber."""
    topic = f"{topic_root}/{uuid.uuid4().hex}"
    sub_topic = f"$share/{broker.share_group}/{topic}" if broker.share_group else topic
    received = 0
    all_in = threading.Event()
    subscribed = threading.Event()

    def on_message(*_: object) -> None:
        nonlocal received
        received += 1
        if received >= messages:
            all_in.set()

    sub = _paho(broker.subscriber)
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    sub.subscribe(sub_topic, qos=1)
    subscribed.wait(10)
    pub = _paho(broker.publisher)
    pub.max_inflight_messages_set(1000)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        started = time.perf_counter()
        for _ in range(messages):
            pub.publish(topic, PAYLOAD, qos=1)
        all_in.wait(120)
        return received / (time.perf_counter() - started)
    finally:
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()


def _paho(creds: Credentials | None) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=(creds.clientid or "") if creds else "",
        protocol=mqtt.MQTTv5,
    )
    if creds is not None:
        client.username_pw_set(creds.username, creds.password)
    return client


async def kafka_produce_ceiling(records: int, topic: str, kafka: KafkaSettings) -> float:
    """Records/s aiokafka produces with the gateway's options (acks=all, idempotent, lz4)."""
    producer = AIOKafkaProducer(**kafka_producer_options(kafka))
    await producer.start()
    try:
        key = b"city/bench/s1/senml"
        started = time.perf_counter()
        last = None
        for _ in range(records):
            last = await producer.send(topic, PAYLOAD, key=key)
        await producer.flush()
        if last is not None:
            await last
        return records / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def copy_ceiling(rows: int, dsn: str, owner_dsn: str, batch: int = 5000) -> float:
    """Rows/s the processor's writer stores (COPY + INSERT ... ON CONFLICT), batched.

    ``dsn`` is the processor's (the writer role); the owner's removes the rows
    afterwards, since the writer may not delete.
    """
    prefix = f"bench-copy-{uuid.uuid4().hex[:8]}-"
    base = datetime(2026, 11, 1, tzinfo=UTC)
    readings = [
        Reading(base + timedelta(seconds=i // 100), f"{prefix}{i % 100}", "pm2_5", 20.0, BENCH_CITY)
        for i in range(rows)
    ]
    async with ReadingWriter(dsn) as writer:
        started = time.perf_counter()
        for i in range(0, rows, batch):
            await writer.write(readings[i : i + batch], [])
        elapsed = time.perf_counter() - started
    with psycopg.connect(owner_dsn) as conn:
        conn.execute("DELETE FROM readings WHERE sensor_id LIKE %s", (prefix + "%",))
        conn.execute("DELETE FROM sensors WHERE sensor_id LIKE %s", (prefix + "%",))
    return rows / elapsed
