"""Test helpers on top of :mod:`tools.sandbox`: an MQTT publisher, row counts."""

from __future__ import annotations

import json

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from nakhon.config import load_settings
from nakhon.identity.provision import Credentials
from nakhon.local_stack import LOCAL_STACK
from tools.sandbox import PipelineNamespace, wait_until

__all__ = ["PipelineNamespace", "Publisher", "count_rows", "owner_dsn", "senml", "wait_until"]


def owner_dsn() -> str:
    """The schema owner's DSN from the stack's env file: tests seed, inspect and clean with it."""
    return load_settings().db.dsn.get_secret_value()


class Publisher:
    """A QoS 1 MQTT publisher that waits for each PUBACK from the broker.

    It connects as ``credentials`` (a namespace's publishing bridge, or a device).
    """

    def __init__(self, credentials: Credentials | None) -> None:
        assert credentials is not None, "prepare() the namespace first"
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.username_pw_set(credentials.username, credentials.password)
        self._client.max_inflight_messages_set(1000)
        self._client.connect("127.0.0.1", LOCAL_STACK.mqtt_port)
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


def senml(metric: str, value: float, t: float, unit: str | None = None) -> bytes:
    record: dict[str, object] = {"n": metric, "v": value, "t": t}
    if unit:
        record["u"] = unit
    return json.dumps([record]).encode()


def count_rows(sensor_prefix: str) -> int:
    with psycopg.connect(owner_dsn()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings WHERE sensor_id LIKE %s", (sensor_prefix + "%",)
        ).fetchone()
        assert row is not None
        return int(row[0])
