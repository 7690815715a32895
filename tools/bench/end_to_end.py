"""End-to-end: MQTT publish -> gateway -> Kafka -> processor -> row, measured.

Runs its own gateway and processor (:mod:`tools.sandbox`), so it measures
Nakhon and not whatever else ``make up`` left running. Every reading carries
its publish time as its own time (µs); the processor publishes a reading to
``<ns>.readings`` right after the database commit that stored it, so a
consumer there sees publish -> row latency (plus one Kafka hop).

Two kinds of phase, both published by Mosquitto's own C publisher
(``mosquitto_pub -l``, several at once) so that the load generator is not what
is measured: *throughput* publishes as fast as the gateway takes messages and
reports readings stored per second; *latency* publishes at a given rate (a
share of the flat-out one), each pack dated with the moment its line is handed
to ``mosquitto_pub``, and reports p50/p99 publish-to-row, the figure a city app
feels. Given a :class:`~tools.bench.cpu.CpuMeter`, a phase also reports the
CPU each component spent on it.
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
import psycopg
from aiokafka import AIOKafkaConsumer

from nakhon.kafka_client import kafka_client_options
from tools.bench.ceilings import BENCH_CITY
from tools.bench.cpu import CpuCost, CpuMeter
from tools.bench.mqtt_logins import Broker, c_client_env
from tools.bench.stats import percentile
from tools.sandbox import LOCAL_CA, MQTT_TLS_PORT, PipelineNamespace

READINGS_PER_MESSAGE = 5
_METRICS = ("pm2_5", "pm10", "temperature", "humidity", "noise_laeq")


@dataclass(frozen=True)
class PhaseResult:
    messages: int
    readings: int
    seconds: float
    readings_per_s: float
    #: Publish -> row, only where packs carry their publish time (rate given).
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    #: CPU per component over the phase (a meter given): gateway, processor, the stack's.
    cpu: dict[str, CpuCost] | None = None


def _pack(sensor: str, seq: int, when: float | None = None) -> bytes:
    """A SenML pack of 5 readings dated ``when`` (default: now, the publish time)."""
    t = time.time() if when is None else when
    records: list[dict[str, object]] = [
        {"bn": f"{sensor}:", "bt": round(t, 6), "n": _METRICS[0], "v": float(seq % 500)}
    ]
    records += [{"n": m, "v": 20.0 + seq % 50} for m in _METRICS[1:]]
    return orjson.dumps(records)


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


def _c_publisher_procs(
    ns: PipelineNamespace, tag: str, env: dict[str, str], count: int
) -> list[tuple[str, subprocess.Popen[bytes]]]:
    """``count`` ``mosquitto_pub -l`` processes, one sensor (one topic) each, reading stdin."""
    procs = []
    for k in range(count):
        sensor = f"{ns.name}-{tag}{k}"
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
            bufsize=0,
        )
        procs.append((sensor, proc))
    return procs


def _c_publishers(
    ns: PipelineNamespace, tag: str, messages: int, tls: bool = False, count: int = 4
) -> None:
    """Publish ``messages`` packs through ``count`` mosquitto_pub processes, flat out.

    Each publisher is one sensor with one topic; its packs carry distinct times
    (one second apart, ending now), so none is a duplicate of another.
    """
    per = messages // count
    base = time.time() - per
    broker = Broker(publisher=ns.publisher_credentials, port=ns.mqtt_port)
    if tls:
        broker = dataclasses.replace(broker, port=MQTT_TLS_PORT, ca_file=LOCAL_CA)
    with c_client_env(broker) as env:
        procs = _c_publisher_procs(ns, tag, env, count)
        for sensor, proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"".join(_pack(sensor, i, base + i) + b"\n" for i in range(per)))
            proc.stdin.close()
        for _, proc in procs:
            proc.wait(300)


def _paced_c_publishers(
    ns: PipelineNamespace, tag: str, messages: int, rate: float, count: int = 4
) -> None:
    """Publish ``messages`` packs at ``rate`` a second through ``count`` mosquitto_pub.

    Each pack is dated the moment its line goes to its publisher (strictly
    increasing, so no two are duplicates); the publishers take turns.
    """
    broker = Broker(publisher=ns.publisher_credentials, port=ns.mqtt_port)
    with c_client_env(broker) as env:
        procs = _c_publisher_procs(ns, tag, env, count)
        started = time.perf_counter()
        last = 0.0
        for i in range(messages):
            ahead = started + i / rate - time.perf_counter()
            if ahead > 0.001:
                time.sleep(ahead)
            sensor, proc = procs[i % count]
            last = max(time.time(), last + 1e-5)
            assert proc.stdin is not None
            proc.stdin.write(_pack(sensor, i, last) + b"\n")
        for _, proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for _, proc in procs:
            proc.wait(300)


async def run_phase(
    ns: PipelineNamespace,
    tag: str,
    messages: int,
    rate: float | None,
    *,
    tls: bool = False,
    meter: CpuMeter | None = None,
) -> PhaseResult:
    """Publish ``messages`` packs (flat out when ``rate`` is None) and time their rows.

    With ``tls``, the flat-out publishers reach the broker over TLS (8883).
    With ``meter``, the CPU of each component is sampled as the first pack
    goes out and once the last reading is in.
    """
    messages -= messages % 4
    consumer = AIOKafkaConsumer(ns.readings_topic, **kafka_client_options(ns.kafka), group_id=None)
    await consumer.start()
    try:
        await consumer.seek_to_end()
        latencies: list[float] = []
        before = meter.sample() if meter else None
        started = time.perf_counter()
        if rate is None:
            publishing = asyncio.ensure_future(
                asyncio.to_thread(_c_publishers, ns, tag, messages, tls)
            )
        else:
            # A process of its own: the publisher's pacing must not share a GIL
            # with the consumer that timestamps arrivals.
            process = multiprocessing.get_context("fork").Process(
                target=_paced_c_publishers, args=(ns, tag, messages, rate), daemon=True
            )
            process.start()
            publishing = asyncio.ensure_future(asyncio.to_thread(process.join, 300))
        try:
            expect = messages * READINGS_PER_MESSAGE
            last_at = await _collect(consumer, expect, latencies, timeout_s=300)
        finally:
            await publishing
        after = meter.sample() if meter else None
    finally:
        await consumer.stop()
    seconds = last_at - started
    readings = messages * READINGS_PER_MESSAGE
    return PhaseResult(
        messages=messages,
        readings=readings,
        seconds=round(seconds, 2),
        readings_per_s=round(readings / seconds),
        latency_p50_ms=round(percentile(latencies, 50), 1) if rate is not None else None,
        latency_p99_ms=round(percentile(latencies, 99), 1) if rate is not None else None,
        cpu=meter.costs(before, after, messages, readings) if meter and before and after else None,
    )


def cleanup(ns: PipelineNamespace, dsn: str) -> None:
    """Delete the namespace's rows: readings, positions and sensors (the owner's DSN)."""
    like = (ns.name + "-%",)
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM readings WHERE sensor_id LIKE %s", like)
        conn.execute("DELETE FROM positions WHERE vehicle_id LIKE %s", like)
        conn.execute("DELETE FROM sensors WHERE sensor_id LIKE %s", like)
