"""The fleet profile of ``make bench``: a city's sensors, each at its own pace.

Flat out measures the pipe with one kind of pack from four publishers; a city
is thousands of sensors each sending a little, in several formats, spread over
the interval. The fleet is :mod:`nakhon.simulator`'s (six registered cities;
air quality in SenML, noise in simple JSON, traffic as FIWARE
TrafficFlowObserved, buses as positions), and a third of its air-quality
sensors speak LoRaWAN through The Things Stack v3 instead of SenML. Every
sensor is in the registry first, as a city imports its sensors (``nakhon
sensors import``): that is also where a LoRaWAN device's city comes from.

Each sensor publishes once per interval, at its own offset in it, from one
paho publisher in a process of its own; every payload is dated with its
publish time, so the processor's ``<ns>.readings`` records give publish ->
row latency (positions are not published there: they are counted in the
database).
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import paho.mqtt.client as mqtt
import psycopg
from aiokafka import AIOKafkaConsumer
from paho.mqtt.enums import CallbackAPIVersion

from nakhon.identity.provision import Credentials
from nakhon.kafka_client import kafka_client_options
from nakhon.simulator.fleet import SimSensor, build_fleet, payload
from tools.bench.cpu import CpuCost, CpuMeter
from tools.bench.stats import percentile
from tools.sandbox import PipelineNamespace

#: Readings one message of each format carries (a position is counted apart).
READINGS_PER_MESSAGE = {"senml": 4, "tts-v3": 6, "json": 1, "ngsi": 3, "position": 0}
_FORMAT_OF_KIND = {"air": "senml", "noise": "json", "traffic": "ngsi", "bus": "position"}
_REGISTRY_KIND = {"air": "air_quality", "noise": "noise", "traffic": "traffic", "bus": "vehicle"}
TTS_APPLICATION = "nakhon-bench@ttn"


@dataclass(frozen=True, slots=True)
class FleetSensor:
    sim: SimSensor
    fmt: str
    topic: str


def build_bench_fleet(ns: PipelineNamespace, count: int) -> list[FleetSensor]:
    """``count`` sensors of the simulator's fleet, with ids and topics of ``ns``."""
    fleet = []
    for i, sim in enumerate(build_fleet(count)):
        sim = dataclasses.replace(sim, sensor_id=f"{ns.name}-{sim.sensor_id}")
        fmt = _FORMAT_OF_KIND[sim.kind]
        if sim.kind == "air" and (i // 36) % 3 == 0:
            fmt = "tts-v3"
            topic = f"{ns.root}-ttn/v3/{TTS_APPLICATION}/devices/{sim.sensor_id}/up"
        else:
            topic = ns.topic(sim.city.slug, sim.sensor_id, fmt)
        fleet.append(FleetSensor(sim, fmt, topic))
    return fleet


def message(sensor: FleetSensor, now: datetime, rng: random.Random) -> bytes:
    """What ``sensor`` publishes at ``now`` (its payload is dated ``now``)."""
    if sensor.fmt != "tts-v3":
        return payload(sensor.sim, now, rng)
    # The air sensor's values, as a TTS payload formatter would decode its frame.
    decoded = {r["n"]: r["v"] for r in orjson.loads(payload(sensor.sim, now, rng))}
    at = now.isoformat().replace("+00:00", "Z")
    return orjson.dumps(
        {
            "end_device_ids": {
                "device_id": sensor.sim.sensor_id,
                "application_ids": {"application_id": TTS_APPLICATION.split("@")[0]},
            },
            "received_at": at,
            "uplink_message": {
                "f_port": 2,
                "decoded_payload": decoded,
                "rx_metadata": [
                    {
                        "gateway_ids": {"gateway_id": f"gw-{sensor.sim.city.code}-1"},
                        "rssi": round(rng.uniform(-120, -70)),
                        "snr": round(rng.uniform(-10, 10), 2),
                    }
                ],
                "received_at": at,
            },
        }
    )


def register_fleet(fleet: list[FleetSensor], dsn: str) -> None:
    """Put the fleet in the sensor registry (owner's DSN), as ``nakhon sensors import`` would."""
    rows = [
        (s.sim.sensor_id, s.sim.city.slug, _REGISTRY_KIND[s.sim.kind], s.sim.lat, s.sim.lon)
        for s in fleet
    ]
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sensors (sensor_id, city, kind, lat, lon, name, source)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'registry') ON CONFLICT (sensor_id) DO NOTHING",
            [(*row, row[0]) for row in rows],
        )


def _publish(
    creds: Credentials, port: int, fleet: list[FleetSensor], interval_s: float, messages: int
) -> None:
    """Each sensor once per interval at its own offset, ``messages`` in all (QoS 1)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(creds.username, creds.password)
    client.max_inflight_messages_set(2000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    rng = random.Random(11)
    try:
        step = interval_s / len(fleet)
        started = time.perf_counter()
        last = None
        for j in range(messages):
            ahead = started + j * step - time.perf_counter()
            if ahead > 0.001:
                time.sleep(ahead)
            sensor = fleet[j % len(fleet)]
            last = client.publish(sensor.topic, message(sensor, datetime.now(UTC), rng), qos=1)
        if last is not None:
            last.wait_for_publish(120)
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass(frozen=True)
class FleetResult:
    sensors: int
    cities: int
    formats: dict[str, int]
    interval_s: float
    publish_seconds: float
    messages: int
    offered_messages_per_s: float
    expected_readings: int
    stored_readings: int
    expected_positions: int
    stored_positions: int
    #: Readings stored per second, from the first publish to the last row.
    readings_per_s: float
    #: From the last publish to the last row: how far behind the pipeline was at the end.
    drain_seconds: float
    latency_p50_ms: float
    latency_p99_ms: float
    cpu: dict[str, CpuCost] | None


async def run_fleet(
    ns: PipelineNamespace,
    fleet: list[FleetSensor],
    interval_s: float,
    seconds: float,
    dsn: str,
    meter: CpuMeter | None,
) -> FleetResult:
    """Publish the fleet for ``seconds`` (whole intervals) and measure what lands, and how fast."""
    rounds = max(1, round(seconds / interval_s))
    messages = rounds * len(fleet)
    per_format = {f: sum(1 for s in fleet if s.fmt == f) for f in READINGS_PER_MESSAGE}
    expected = rounds * sum(READINGS_PER_MESSAGE[s.fmt] for s in fleet)
    positions = rounds * per_format["position"]
    assert ns.publisher_credentials is not None, "prepare() the namespace first"
    consumer = AIOKafkaConsumer(ns.readings_topic, **kafka_client_options(ns.kafka), group_id=None)
    await consumer.start()
    try:
        await consumer.seek_to_end()
        before = meter.sample() if meter else None
        started = time.perf_counter()
        # A process of its own: the publisher must not share a GIL with the consumer.
        process = multiprocessing.get_context("fork").Process(
            target=_publish,
            args=(ns.publisher_credentials, ns.mqtt_port, fleet, interval_s, messages),
            daemon=True,
        )
        process.start()
        publishing = asyncio.ensure_future(asyncio.to_thread(process.join, seconds + 300))
        latencies: list[float] = []
        try:
            last_at = await _collect(ns, consumer, expected, latencies, publishing)
        finally:
            await publishing
        after = meter.sample() if meter else None
    finally:
        await consumer.stop()
    stored, stored_positions = _count_rows(ns, dsn)
    elapsed = last_at - started
    return FleetResult(
        sensors=len(fleet),
        cities=len({s.sim.city.slug for s in fleet}),
        formats={f: n for f, n in per_format.items() if n},
        interval_s=interval_s,
        publish_seconds=rounds * interval_s,
        messages=messages,
        offered_messages_per_s=round(len(fleet) / interval_s),
        expected_readings=expected,
        stored_readings=stored,
        expected_positions=positions,
        stored_positions=stored_positions,
        readings_per_s=round(stored / elapsed),
        drain_seconds=round(max(0.0, last_at - started - rounds * interval_s), 2),
        latency_p50_ms=round(percentile(latencies, 50), 1),
        latency_p99_ms=round(percentile(latencies, 99), 1),
        cpu=meter.costs(before, after, messages, stored) if meter and before and after else None,
    )


async def _collect(
    ns: PipelineNamespace,
    consumer: AIOKafkaConsumer,
    expect: int,
    latencies: list[float],
    publishing: asyncio.Future[None],
) -> float:
    """Read readings records until ``expect`` readings came, or the processor caught up
    after the publisher finished (some were refused). One latency sample per record;
    returns when the last record arrived."""
    seen = 0
    last_at = time.perf_counter()
    deadline: float | None = None
    while seen < expect:
        batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
        now_wall = time.time()
        for msgs in batch.values():
            for m in msgs:
                readings = orjson.loads(m.value)["readings"]
                seen += len(readings)
                sent = datetime.fromisoformat(readings[0]["time"]).timestamp()
                latencies.append((now_wall - sent) * 1000)
        if batch:
            last_at = time.perf_counter()
        elif publishing.done():
            if deadline is None:
                deadline = time.monotonic() + 120
            if await ns.caught_up() or time.monotonic() > deadline:
                break
    return last_at


def _count_rows(ns: PipelineNamespace, dsn: str) -> tuple[int, int]:
    like = (ns.name + "-sim-%",)
    with psycopg.connect(dsn) as conn:
        readings = conn.execute(
            "SELECT count(*) FROM readings WHERE sensor_id LIKE %s", like
        ).fetchone()
        positions = conn.execute(
            "SELECT count(*) FROM positions WHERE vehicle_id LIKE %s", like
        ).fetchone()
    return (int(readings[0]) if readings else 0), (int(positions[0]) if positions else 0)
