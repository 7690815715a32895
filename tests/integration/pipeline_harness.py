"""Test helpers on top of :mod:`tools.sandbox`: an MQTT publisher, row counts, markers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from nakhon.config import load_settings
from nakhon.identity.provision import Credentials
from nakhon.local_stack import LOCAL_STACK
from tools.sandbox import REPO, PipelineNamespace, wait_for, wait_until

__all__ = [
    "MARKER_METRIC",
    "PipelineNamespace",
    "Publisher",
    "count_rows",
    "owner_dsn",
    "pm25_stream",
    "run_nakhon",
    "senml",
    "settle",
    "wait_for",
    "wait_until",
]
#: The canonical metric of the markers :func:`settle` publishes (as SenML ``pm10``):
#: a stream meant to be counted exactly uses another.
MARKER_METRIC = "pm10"
_MARKER_TIME = 1_795_000_000
_MARKERS = {
    "senml": json.dumps([{"n": "pm10", "v": 1.0, "t": _MARKER_TIME}]).encode(),
    "json": json.dumps({"ts": _MARKER_TIME, "pm10": 1.0}).encode(),
}


def pm25_stream(
    ns: PipelineNamespace, prefix: str, n: int, sensors: int = 50, base: int = 1_795_000_000
) -> list[tuple[str, bytes]]:
    """``n`` SenML pm25 readings of ``sensors`` sensors ``<prefix><i>`` in chiang_mai.

    Each reading has its own (sensor, time), so a count of rows tells lost and
    duplicated readings apart from a replay that dedupes.
    """
    return [
        (
            ns.topic("chiang_mai", f"{prefix}{i % sensors}", "senml"),
            senml("pm25", float(i % 500), base + i // sensors),
        )
        for i in range(n)
    ]


def run_nakhon(
    *args: str, env: Mapping[str, str] | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """``nakhon <args>`` from the checkout, as an operator runs it, its output captured.

    ``env`` is the command's whole environment (default: the test's own).
    """
    return subprocess.run(
        [sys.executable, "-m", "nakhon.cli", *args],
        env=None if env is None else dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def owner_dsn() -> str:
    """The schema owner's DSN from the stack's env file: tests seed, inspect and clean with it."""
    return load_settings().db.dsn.get_secret_value()


class Publisher:
    """A QoS 1 MQTT publisher that waits for each PUBACK from the broker.

    It connects as ``credentials`` (a namespace's publishing bridge, or a device).
    """

    def __init__(self, credentials: Credentials | None, port: int = LOCAL_STACK.mqtt_port) -> None:
        assert credentials is not None, "prepare() the namespace first"
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.username_pw_set(credentials.username, credentials.password)
        self._client.max_inflight_messages_set(1000)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        return self._client.publish(topic, payload, qos=1)

    def publish_all(self, messages: list[tuple[str, bytes]]) -> None:
        infos = [self.publish(t, p) for t, p in messages]
        for info in infos:
            info.wait_for_publish(30)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._client.reinitialise()  # closes paho's wake-up socket pair now, not at a GC


def senml(metric: str, value: float, t: float, unit: str | None = None) -> bytes:
    record: dict[str, object] = {"n": metric, "v": value, "t": t}
    if unit:
        record["u"] = unit
    return json.dumps([record]).encode()


def count_rows(sensor_prefix: str, metric: str | None = None) -> int:
    """Readings rows of the sensors whose id starts with ``sensor_prefix`` (of ``metric``)."""
    with psycopg.connect(owner_dsn()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings WHERE sensor_id LIKE %s"
            " AND (%s::text IS NULL OR metric = %s)",
            (sensor_prefix + "%", metric, metric),
        ).fetchone()
        assert row is not None
        return int(row[0])


async def settle(
    ns: PipelineNamespace, publisher: Publisher, topics: Iterable[str], timeout_s: float = 90
) -> None:
    """Return once everything published so far on ``topics`` went through the processors.

    A fact, not a pause: one marker reading (:data:`MARKER_METRIC`) is
    published on each topic (SenML or simple JSON) after what it carries. Its
    MQTT topic is its Kafka key, so it lands in the same partition, behind
    those records, and the processor takes a partition in order: the marker's
    row means every record before it was stored (or dead-lettered). Then the
    consumer group's lag is waited to zero: every batch committed, its dead
    letters in Kafka. Rows of :data:`MARKER_METRIC` are the markers': count
    the stream by its own metric.
    """
    sensors: set[str] = set()
    markers: list[tuple[str, bytes]] = []
    for topic in sorted(set(topics)):
        _root, _city, sensor, fmt = topic.split("/")
        sensors.add(sensor.lower())
        markers.append((topic, _MARKERS[fmt]))
    await asyncio.to_thread(publisher.publish_all, markers)

    def markers_stored() -> bool:
        with psycopg.connect(owner_dsn()) as conn:
            row = conn.execute(
                "SELECT count(*) FROM readings WHERE sensor_id = ANY(%s) AND metric = %s"
                " AND time = to_timestamp(%s)",
                (sorted(sensors), MARKER_METRIC, _MARKER_TIME),
            ).fetchone()
        return row is not None and row[0] == len(sensors)

    await wait_for(markers_stored, timeout_s, f"the markers of {len(sensors)} sensors stored")
    await wait_for(ns.caught_up, 30, f"{ns.name}'s consumer group committed to the end of raw")
