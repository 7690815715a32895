"""End-to-end: MQTT publish -> gateway -> Kafka -> processor -> row, measured.

Runs its own gateway and processor (:mod:`tools.sandbox`), so it measures
Nakhon and not whatever else ``make up`` left running. Every reading carries
its publish time as its own time (µs); the processor publishes a reading to
``<ns>.readings`` right after the database commit that stored it, so a
consumer there sees publish -> row latency (plus one Kafka hop).

Two phases: *throughput* publishes as fast as the gateway takes messages, with
Mosquitto's own C publisher (``mosquitto_pub -l``, several at once) so that the
load generator is not what is measured, and reports readings stored per
second; *latency* publishes at a fixed, sustainable rate from a paho publisher
that stamps each pack with its publish time, and reports p50/p99
publish-to-row, the figure a city app feels.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime

import orjson
import paho.mqtt.client as mqtt
import psycopg
from aiokafka import AIOKafkaConsumer
from paho.mqtt.enums import CallbackAPIVersion

from nakhon.kafka_client import kafka_client_options
from nakhon.local_stack import LOCAL_STACK
from tools.bench.ceilings import BENCH_CITY
from tools.bench.mqtt_logins import Broker, c_client_env
from tools.bench.stats import percentile
from tools.sandbox import LOCAL_CA, MQTT_TLS_PORT, PipelineNamespace

READINGS_PER_MESSAGE = 5
_METRICS = ("pm2_5", "pm10", "temperature", "humidity", "noise_laeq")


@dataclass(frozen=True)
class PhaseResult:
    readings: int
    seconds: float
    readings_per_s: float
    #: Publish -> row, only where packs carry their publish time (rate given).
    latency_p50_ms: float | None
    latency_p99_ms: float | None


def _pack(sensor: str, seq: int, when: float | None = None) -> bytes:
    """A SenML pack of 5 readings dated ``when`` (default: now, the publish time)."""
    t = time.time() if when is None else when
    records: list[dict[str, object]] = [
        {"bn": f"{sensor}:", "bt": round(t, 6), "n": _METRICS[0], "v": float(seq % 500)}
    ]
    records += [{"n": m, "v": 20.0 + seq % 50} for m in _METRICS[1:]]
    return orjson.dumps(records)


class _Publisher:
    def __init__(self, ns: PipelineNamespace) -> None:
        creds = ns.publisher_credentials
        assert creds is not None, "prepare() the namespace first"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(creds.username, creds.password)
        self.client.max_inflight_messages_set(2000)
        self.client.connect("127.0.0.1", LOCAL_STACK.mqtt_port)
        self.client.loop_start()

    def run(self, ns: PipelineNamespace, tag: str, messages: int, rate: float | None) -> None:
        """Publish ``messages`` packs from 1000 sensors, at ``rate`` msg/s or flat out."""
        started = time.perf_counter()
        last = None
        for i in range(messages):
            sensor = f"{ns.name}-{tag}{i % 1000}"
            last = self.client.publish(
                ns.topic(BENCH_CITY, sensor, "senml"), _pack(sensor, i), qos=1
            )
            if rate is not None:
                ahead = started + (i + 1) / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
        if last is not None:
            last.wait_for_publish(120)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publish(ns: PipelineNamespace, tag: str, messages: int, rate: float | None) -> None:
    publisher = _Publisher(ns)
    try:
        publisher.run(ns, tag, messages, rate)
    finally:
        publisher.close()


async def _collect(
    consumer: AIOKafkaConsumer, expect: int, latencies: list[float], timeout_s: float
) -> float:
    """Consume readings until ``expect`` arrived; return the arrival time of the last."""
    seen = 0
    last_at = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    while seen < expect and time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
        now_wall = time.time()
        for msgs in batch.values():
            for m in msgs:
                doc = orjson.loads(m.value)
                for r in doc["readings"]:
                    seen += 1
                    if r["metric"] == _METRICS[0]:
                        sent = _epoch(r["time"])
                        latencies.append((now_wall - sent) * 1000)
        if batch:
            last_at = time.perf_counter()
    if seen < expect:
        raise TimeoutError(f"only {seen} of {expect} readings arrived within {timeout_s:.0f}s")
    return last_at


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _c_publishers(
    ns: PipelineNamespace, tag: str, messages: int, tls: bool = False, count: int = 4
) -> None:
    """Publish ``messages`` packs through ``count`` mosquitto_pub processes, flat out.

    Each publisher is one sensor with one topic; its packs carry distinct times
    (one second apart, ending now), so none is a duplicate of another.
    """
    per = messages // count
    base = time.time() - per
    procs = []
    broker = Broker(publisher=ns.publisher_credentials)
    if tls:
        broker = dataclasses.replace(broker, port=MQTT_TLS_PORT, ca_file=LOCAL_CA)
    with c_client_env(broker) as env:
        for k in range(count):
            sensor = f"{ns.name}-{tag}{k}"
            lines = b"".join(_pack(sensor, i, base + i) + b"\n" for i in range(per))
            proc = subprocess.Popen(  # noqa: S603  (fixed command line)
                [
                    "/usr/bin/mosquitto_pub",
                    "-q",
                    "1",
                    "-l",
                    "-t",
                    ns.topic(BENCH_CITY, sensor, "senml"),
                ],
                stdin=subprocess.PIPE,
                env=env,
            )
            procs.append((proc, lines))
        for proc, lines in procs:
            assert proc.stdin is not None
            proc.stdin.write(lines)
            proc.stdin.close()
        for proc, _ in procs:
            proc.wait(300)


async def run_phase(
    ns: PipelineNamespace, tag: str, messages: int, rate: float | None, *, tls: bool = False
) -> PhaseResult:
    """Publish ``messages`` packs (flat out when ``rate`` is None) and time their rows.

    With ``tls``, the flat-out publishers reach the broker over TLS (8883).
    """
    consumer = AIOKafkaConsumer(ns.readings_topic, **kafka_client_options(ns.kafka), group_id=None)
    await consumer.start()
    try:
        await consumer.seek_to_end()
        latencies: list[float] = []
        started = time.perf_counter()
        if rate is None:
            messages -= messages % 4
            publishing = asyncio.ensure_future(
                asyncio.to_thread(_c_publishers, ns, tag, messages, tls)
            )
        else:
            # A process of its own: the publisher must not share a GIL with the
            # consumer that timestamps arrivals.
            process = multiprocessing.get_context("fork").Process(
                target=_publish, args=(ns, tag, messages, rate), daemon=True
            )
            process.start()
            publishing = asyncio.ensure_future(asyncio.to_thread(process.join, 300))
        try:
            expect = messages * READINGS_PER_MESSAGE
            last_at = await _collect(consumer, expect, latencies, timeout_s=300)
        finally:
            await publishing
    finally:
        await consumer.stop()
    seconds = last_at - started
    return PhaseResult(
        readings=messages * READINGS_PER_MESSAGE,
        seconds=round(seconds, 2),
        readings_per_s=round(messages * READINGS_PER_MESSAGE / seconds),
        latency_p50_ms=round(percentile(latencies, 50), 1) if rate is not None else None,
        latency_p99_ms=round(percentile(latencies, 99), 1) if rate is not None else None,
    )


def cleanup(ns: PipelineNamespace, dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM readings WHERE sensor_id LIKE %s", (ns.name + "-%",))
        conn.execute("DELETE FROM sensors WHERE sensor_id LIKE %s", (ns.name + "-%",))
