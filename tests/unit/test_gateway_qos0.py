"""The gateway's queue of QoS 0 messages is bounded (MQTT 5 Receive Maximum bounds only QoS > 0).

The gateway is built with stand-ins for its MQTT source and Kafka producer, and
its hot path is driven directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from nakhon.config import GatewaySettings, KafkaSettings
from nakhon.domain.raw_record import MqttMessage
from nakhon.ingest.gateway import Gateway
from nakhon.ingest.metrics import GatewayMetrics

CONNECTION = 1


class SilentSource:
    """An MQTT source nobody publishes to; the tests call the gateway's callbacks directly."""

    connected = True
    subscribed = True

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def stop_accepting(self) -> None:
        pass

    def ack_many(self, mids: Sequence[int], connection: int) -> None:
        pass

    def stop(self) -> None:
        pass


def silent_source(*callbacks: Any) -> SilentSource:
    return SilentSource()


class AcceptingKafka:
    """Acknowledges every record at once."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        self.values.append(value)
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivery.set_result(None)
        return delivery


Make = Callable[..., Gateway]


@pytest.fixture
def make_gateway() -> Make:
    def make(max_queued_qos0: int, kafka: AcceptingKafka | None = None) -> Gateway:
        gateway = Gateway(
            KafkaSettings(bootstrap_servers="127.0.0.1:1"),
            GatewaySettings(name="test", max_queued_qos0=max_queued_qos0),
            GatewayMetrics(CollectorRegistry()),
            kafka or AcceptingKafka(),
            silent_source,
        )
        gateway._on_connection_change(CONNECTION, True)
        return gateway

    return make


def message(n: int, qos: int) -> MqttMessage:
    return MqttMessage(
        topic="city/rayong/aq-1/json",
        payload=f'{{"pm25": {n}}}'.encode(),
        qos=qos,
        mid=n if qos else 0,
        received_at_us=1795766400000000 + n,
        connection=CONNECTION,
    )


def dropped(gateway: Gateway) -> float:
    value: float = gateway._metrics.qos0_dropped._value.get()
    return value


async def test_qos0_messages_past_the_bound_are_dropped_and_counted(make_gateway: Make) -> None:
    gateway = make_gateway(3)
    for n in range(10):
        gateway._on_message(message(n, qos=0))
    assert len(gateway._queue) == 3
    assert dropped(gateway) == 7
    assert gateway._metrics.received._value.get() == 10


async def test_qos1_messages_are_never_dropped(make_gateway: Make) -> None:
    gateway = make_gateway(3)
    for n in range(5):
        gateway._on_message(message(n, qos=0))
    for n in range(1, 6):
        gateway._on_message(message(n, qos=1))  # bounded by the broker (Receive Maximum)
    assert len(gateway._queue) == 3 + 5
    assert dropped(gateway) == 2
    assert len(gateway._acks) == 3 + 5


async def test_a_drained_queue_takes_qos0_messages_again(make_gateway: Make) -> None:
    kafka = AcceptingKafka()
    gateway = make_gateway(3, kafka)
    for n in range(5):
        gateway._on_message(message(n, qos=0))
    forwarder = asyncio.create_task(gateway._forward())
    try:
        await asyncio.wait_for(gateway._drain(), timeout=5)
        assert kafka.values == [b'{"pm25": 0}', b'{"pm25": 1}', b'{"pm25": 2}']
        for n in range(5, 8):
            gateway._on_message(message(n, qos=0))
        await asyncio.wait_for(gateway._drain(), timeout=5)
    finally:
        forwarder.cancel()
    assert len(kafka.values) == 6
    assert dropped(gateway) == 2
    assert len(gateway._acks) == 0


async def test_drops_are_logged_now_and_then_not_once_each(
    make_gateway: Make, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = make_gateway(1)
    with caplog.at_level(logging.WARNING, logger="nakhon.ingest.gateway"):
        for n in range(1000):
            gateway._on_message(message(n, qos=0))
    assert dropped(gateway) == 999
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "max_queued_qos0" in warnings[0].getMessage()


class RefusingLargeKafka(AcceptingKafka):
    """Takes every record, then refuses at delivery those of ``raw`` larger than ``limit``,
    as a broker whose topic has a smaller ``max.message.bytes`` does."""

    def __init__(self, limit: int, refuse_topic: str) -> None:
        super().__init__()
        self.limit = limit
        self.refuse_topic = refuse_topic
        self.sent: list[tuple[str, bytes, dict[str, bytes]]] = []

    async def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        self.sent.append((topic, value, dict(headers)))
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if topic == self.refuse_topic and len(value) > self.limit:
            delivery.set_exception(MessageSizeTooLargeError())
        else:
            delivery.set_result(None)
        return delivery


async def test_a_record_the_broker_refuses_as_too_large_is_dead_lettered_not_retried(
    make_gateway: Make,
) -> None:
    kafka = RefusingLargeKafka(limit=100, refuse_topic="nakhon.raw")
    gateway = make_gateway(100, kafka)
    big = MqttMessage("city/rayong/aq-1/json", b"x" * 500, 1, 7, 1795766400000000, None, CONNECTION)
    gateway._on_message(big)
    gateway._on_message(message(8, qos=1))  # behind it: must not wait forever
    forwarder = asyncio.create_task(gateway._forward())
    try:
        await asyncio.wait_for(gateway._drain(), timeout=5)
    finally:
        forwarder.cancel()
    topics = [t for t, _, _ in kafka.sent]
    assert topics == ["nakhon.raw", "nakhon.raw", "nakhon.deadletter"]
    _, value, headers = kafka.sent[2]
    assert value == b"" and headers["reason"] == b"payload_too_large"
    assert len(gateway._acks) == 0  # both acknowledged: nothing blocks later PUBACKs
