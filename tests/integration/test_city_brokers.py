"""Several MQTT brokers, one pipeline: each city's devices on the broker the map names.

Broker A is the stack's Mosquitto; broker B a Mosquitto of the test's own,
configured as the stack's (:class:`~tools.private_broker.PrivateBroker`), with
a gateway of its own. ``NAKHON_MQTT_CITY_BROKERS`` maps one city to B's env
file: ``nakhon devices add`` provisions that city's device on B (and says so),
another city's on A. Both gateways forward into the same Kafka topic, one
processor stores every reading once, and a device's login is refused by the
broker that is not its city's.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from paho.mqtt.reasoncodes import ReasonCode

from nakhon.identity.provision import Credentials, existing_usernames
from tests.integration.conftest import Stack
from tests.integration.pipeline_harness import (
    PipelineNamespace,
    Publisher,
    count_rows,
    run_nakhon,
    senml,
    settle,
)
from tests.integration.test_edge_security import Probe
from tools.private_broker import PrivateBroker

BASE_TIME = 1_795_100_000
READINGS = 300


@pytest.fixture
def broker_b(stack: Stack) -> Iterator[PrivateBroker]:
    with PrivateBroker() as b:
        yield b


@pytest.fixture
def broker_b_file(broker_b: PrivateBroker, tmp_path: Path) -> Path:
    """B's env file, as an operator keeps one per broker: its address and admin login."""
    path = tmp_path / "broker-b.env"
    path.write_text(broker_b.env_file.read_text() + f"NAKHON_MQTT_PORT={broker_b.port}\n")
    path.chmod(0o600)
    return path


@pytest.fixture
async def namespaces(broker_b: PrivateBroker) -> AsyncIterator[tuple[PipelineNamespace, ...]]:
    """One namespace (topics, processor) whose gateways read broker A and broker B."""
    on_a = PipelineNamespace()
    await on_a.prepare()
    # The same name: the same topic root, Kafka topics and consumer group; B's logins.
    on_b = PipelineNamespace(name=on_a.name, mqtt_port=broker_b.port, admin=broker_b.admin)
    await on_b.prepare()
    yield on_a, on_b
    on_b.stop_all()
    on_a.stop_all()


def nakhon(env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NAKHON_MQTT_CITY_BROKERS"} | env_extra
    return run_nakhon(*args, env=env)


def _add_device(env: dict[str, str], sensor: str, city: str, root: str) -> Credentials:
    added = nakhon(env, "devices", "add", sensor, "--city", city, "--topic-root", root, "--json")
    assert added.returncode == 0, added.stderr
    made = json.loads(added.stdout)
    return Credentials(made["username"], made["password"], "device")


def _connack(port: int, creds: Credentials) -> ReasonCode:
    probe = Probe(creds.username, creds.password, port=port)
    try:
        return probe.connect()
    finally:
        probe.close()


async def test_each_citys_devices_reach_their_broker_and_every_reading_is_stored_once(
    namespaces: tuple[PipelineNamespace, PipelineNamespace],
    broker_b: PrivateBroker,
    broker_b_file: Path,
) -> None:
    on_a, on_b = namespaces
    root = on_a.root
    env = {"NAKHON_MQTT_CITY_BROKERS": json.dumps({"phuket": str(broker_b_file)})}
    sensor_a, sensor_b = f"{on_a.name}-cm", f"{on_a.name}-pk"
    device_a = _add_device(env, sensor_a, "chiang_mai", root)
    device_b = _add_device(env, sensor_b, "phuket", root)
    shown = nakhon(env, "devices", "list", "--city", "phuket", "--json")
    assert shown.returncode == 0, shown.stderr

    # Each device exists on its city's broker only.
    with broker_b.admin() as admin:
        on_b_users = existing_usernames(admin)
    with on_a.admin() as admin:
        on_a_users = existing_usernames(admin)
    assert sensor_b in on_b_users and sensor_b not in on_a_users
    assert sensor_a in on_a_users and sensor_a not in on_b_users
    # The text output names the broker a mapped city's device connects to.
    text = nakhon(env, "devices", "add", f"{sensor_b}2", "--city", "phuket", "--topic-root", root)
    assert text.returncode == 0, text.stderr
    assert f"broker:           127.0.0.1:{broker_b.port}" in text.stdout

    await on_a.gateway().start_and_wait()
    await on_b.gateway().start_and_wait()
    await on_a.processor().start_and_wait()

    topic_a = on_a.topic("chiang_mai", sensor_a, "senml")
    topic_b = on_a.topic("phuket", sensor_b, "senml")
    pub_a = Publisher(device_a, port=on_a.mqtt_port)
    pub_b = Publisher(device_b, port=broker_b.port)
    try:
        stream_a = [(topic_a, senml("pm25", float(i), BASE_TIME + i)) for i in range(READINGS)]
        stream_b = [(topic_b, senml("pm25", float(i), BASE_TIME + i)) for i in range(READINGS)]
        await asyncio.gather(
            asyncio.to_thread(pub_a.publish_all, stream_a),
            asyncio.to_thread(pub_b.publish_all, stream_b),
        )
        await settle(on_a, pub_a, [topic_a])
        await settle(on_a, pub_b, [topic_b])
    finally:
        pub_a.close()
        pub_b.close()

    assert count_rows(sensor_a, "pm2_5") == READINGS
    assert count_rows(f"{sensor_b}", "pm2_5") == READINGS
    assert await on_a.dead_letters(expect=0, wait_s=1) == []


async def test_a_device_is_refused_by_a_broker_that_is_not_its_citys(
    namespaces: tuple[PipelineNamespace, PipelineNamespace],
    broker_b: PrivateBroker,
    broker_b_file: Path,
) -> None:
    on_a, _ = namespaces
    env = {"NAKHON_MQTT_CITY_BROKERS": json.dumps({"phuket": str(broker_b_file)})}
    sensor = f"{on_a.name}-pk-only"
    creds = _add_device(env, sensor, "phuket", on_a.root)
    assert not _connack(broker_b.port, creds).is_failure
    refused = _connack(on_a.mqtt_port, creds)
    assert refused.is_failure
    assert refused.value in (134, 135)  # bad user name or password / not authorized
