"""The gateway's promise, with stand-ins for the broker and Kafka: a PUBACK only after Kafka's.

The MQTT source and the Kafka producer are fakes handed to :class:`Gateway`;
the test decides when (and how) each produce future resolves and watches the
PUBACKs the gateway sends. No service is involved.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
)
from prometheus_client import CollectorRegistry

from nakhon.config import GatewaySettings, KafkaSettings
from nakhon.domain.raw_record import MqttMessage
from nakhon.ingest import gateway as gateway_module
from nakhon.ingest.ack_queue import AckQueue, AckSlot
from nakhon.ingest.gateway import Gateway
from nakhon.ingest.metrics import GatewayMetrics

RAW = "nakhon.raw"
DEAD = "nakhon.deadletter"


@dataclass
class Send:
    """One record handed to the fake producer, and its delivery future."""

    topic: str
    value: bytes
    headers: dict[str, bytes]
    delivery: asyncio.Future[None]


class FakeKafka:
    """A producer whose deliveries resolve when the test says so.

    ``too_large`` refuses records of ``nakhon.raw`` longer than it, at ``send``
    (as aiokafka checks ``max_request_size``) or, with ``at_delivery``, in the
    delivery future (as a broker with a lower ``max.message.bytes`` answers).
    While ``away``, ``send`` raises a retriable error: nothing is handed over.
    """

    def __init__(self, too_large: int = 1_000_000, *, at_delivery: bool = False) -> None:
        self.too_large = too_large
        self.at_delivery = at_delivery
        self.away = False
        self.sends: list[Send] = []
        #: The topic of every ``send`` call, refused or not.
        self.attempts: list[str] = []
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        self.attempts.append(topic)
        if self.away:
            raise KafkaConnectionError("Kafka is away")
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if topic == RAW and len(value) > self.too_large:
            if not self.at_delivery:
                raise MessageSizeTooLargeError(f"{len(value)} bytes")
            delivery.set_exception(MessageSizeTooLargeError(f"{len(value)} bytes"))
        self.sends.append(Send(topic, value, dict(headers), delivery))
        return delivery

    def pending(self, topic: str = RAW) -> list[Send]:
        return [s for s in self.sends if s.topic == topic and not s.delivery.done()]


@dataclass
class FakeBroker:
    """The gateway's MQTT source: publishes into the gateway, records its PUBACKs."""

    on_message: Callable[[MqttMessage], None]
    on_connection_change: Callable[[int, bool], None]
    connection: int = 0
    connected: bool = False
    subscribed: bool = False
    accepting: bool = True
    #: (packet id, connection) of every PUBACK the gateway sent.
    acks: list[tuple[int, int]] = field(default_factory=list)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.connect()

    def connect(self) -> None:
        self.connection += 1
        self.connected = self.subscribed = True
        self.on_connection_change(self.connection, True)

    def drop_connection(self) -> None:
        self.connected = False
        self.on_connection_change(self.connection, False)

    def publish(self, mid: int, payload: bytes = b"{}", qos: int = 1) -> None:
        if self.accepting:
            msg = MqttMessage(
                f"city/rayong/aq-{mid}/json",
                payload,
                qos,
                mid,
                1795766400000000,
                None,
                self.connection,
            )
            self.on_message(msg)

    def stop_accepting(self) -> None:
        self.accepting = False

    def ack_many(self, mids: Sequence[int], connection: int) -> None:
        self.acks += [(mid, connection) for mid in mids]

    def stop(self) -> None:
        self.connected = False

    @property
    def acked(self) -> list[int]:
        return [mid for mid, _ in self.acks]


@dataclass
class Rig:
    gateway: Gateway
    kafka: FakeKafka
    broker: FakeBroker


async def settle() -> None:
    """Let the forwarder and the delivery callbacks run."""
    for _ in range(20):
        await asyncio.sleep(0)


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.fixture
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    kafka: FakeKafka = getattr(request, "param", None) or FakeKafka()
    brokers: list[FakeBroker] = []

    def source(
        on_message: Callable[[MqttMessage], None], on_change: Callable[[int, bool], None]
    ) -> FakeBroker:
        brokers.append(FakeBroker(on_message, on_change))
        return brokers[-1]

    gateway = Gateway(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        GatewaySettings(name="test"),
        GatewayMetrics(CollectorRegistry()),
        kafka,
        source,
    )
    await gateway.start()
    yield Rig(gateway, kafka, brokers[0])
    await gateway.stop(drain_timeout_s=0.05)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_module, "_RETRY_MIN_S", 0.01)


async def test_pubacks_leave_in_arrival_order_once_kafka_acked_it_and_all_before(
    rig: Rig,
) -> None:
    for mid in (1, 2, 3, 4):
        rig.broker.publish(mid)
    await settle()
    raw = rig.kafka.pending()
    assert [s.headers["qos"] for s in raw] == [b"1"] * 4
    assert rig.broker.acks == []  # handed to Kafka is not acknowledged by Kafka
    raw[2].delivery.set_result(None)
    await settle()
    assert rig.broker.acks == []  # 3 waits for 1 and 2
    raw[0].delivery.set_result(None)
    await settle()
    assert rig.broker.acked == [1]
    raw[3].delivery.set_result(None)
    await settle()
    assert rig.broker.acked == [1]
    raw[1].delivery.set_result(None)
    await settle()
    assert rig.broker.acks == [(1, 1), (2, 1), (3, 1), (4, 1)]


async def test_a_qos0_message_gets_no_puback_and_holds_none_back(rig: Rig) -> None:
    rig.broker.publish(1)
    rig.broker.publish(0, qos=0)
    rig.broker.publish(2)
    await settle()
    for send in reversed(rig.kafka.pending()):
        send.delivery.set_result(None)
    await settle()
    assert rig.broker.acked == [1, 2]


@pytest.mark.parametrize(
    "rig",
    [FakeKafka(too_large=100), FakeKafka(too_large=100, at_delivery=True)],
    ids=["refused-at-send", "refused-by-the-broker"],
    indirect=True,
)
async def test_a_payload_too_large_is_dead_lettered_and_only_then_acknowledged(rig: Rig) -> None:
    rig.broker.publish(1, b"x" * 500)
    rig.broker.publish(2, b"{}")
    await settle()
    for send in rig.kafka.pending(RAW):
        send.delivery.set_result(None)
    await settle()
    assert rig.broker.acks == []  # the dead letter is not in Kafka yet
    [letter] = rig.kafka.pending(DEAD)
    assert letter.value == b""
    assert (letter.headers["reason"], letter.headers["stage"]) == (b"payload_too_large", b"ingest")
    assert letter.headers["mqtt_topic"] == b"city/rayong/aq-1/json"
    letter.delivery.set_result(None)
    await settle()
    assert rig.broker.acked == [1, 2]
    assert (rig.kafka.attempts.count(RAW), rig.kafka.attempts.count(DEAD)) == (2, 1)  # no retry


async def test_a_retriable_failure_is_never_acknowledged_and_is_sent_again(rig: Rig) -> None:
    rig.broker.publish(1, b'{"n": 1}')
    rig.broker.publish(2, b'{"n": 2}')
    await settle()
    first, second = rig.kafka.pending()
    first.delivery.set_exception(KafkaConnectionError("leader went away"))
    second.delivery.set_result(None)
    await eventually(lambda: len(rig.kafka.sends) == 3)
    assert rig.broker.acks == []
    again = rig.kafka.sends[2]
    assert (again.topic, again.value) == (RAW, b'{"n": 1}')
    again.delivery.set_result(None)
    await settle()
    assert rig.broker.acked == [1, 2]


async def test_while_kafka_is_away_nothing_is_acknowledged(rig: Rig) -> None:
    rig.kafka.away = True
    rig.broker.publish(1)
    await asyncio.sleep(0.1)  # several retries
    assert len(rig.kafka.attempts) > 1
    assert (rig.kafka.sends, rig.broker.acks) == ([], [])
    rig.kafka.away = False
    await eventually(lambda: len(rig.kafka.sends) == 1)
    rig.kafka.sends[0].delivery.set_result(None)
    await settle()
    assert rig.broker.acked == [1]


async def test_shutdown_mid_stream_acknowledges_only_what_kafka_acknowledged(rig: Rig) -> None:
    for mid in (1, 2, 3):
        rig.broker.publish(mid)
    await settle()
    delivered, _, unanswered = rig.kafka.pending()
    delivered.delivery.set_result(None)
    unanswered.delivery.set_result(None)  # behind 2, which Kafka has not answered
    await settle()
    rig.kafka.away = True
    rig.broker.publish(4)  # never handed to Kafka
    await settle()
    await rig.gateway.stop(drain_timeout_s=0.1)
    rig.broker.publish(5)  # after the stop: left to the broker
    await settle()
    assert rig.broker.acked == [1]
    assert [s.headers["mqtt_topic"] for s in rig.kafka.sends] == [
        b"city/rayong/aq-1/json",
        b"city/rayong/aq-2/json",
        b"city/rayong/aq-3/json",
    ]
    assert rig.kafka.stopped and not rig.broker.connected


async def test_a_puback_never_goes_out_on_a_newer_connection(rig: Rig) -> None:
    rig.broker.publish(7)
    await settle()
    [old] = rig.kafka.pending()
    rig.broker.drop_connection()
    rig.broker.connect()
    old.delivery.set_result(None)  # packet id 7 died with connection 1
    await settle()
    assert rig.broker.acks == []
    rig.broker.publish(7)  # the broker redelivers it on connection 2
    await settle()
    [redelivered] = rig.kafka.pending()
    redelivered.delivery.set_result(None)
    await settle()
    assert rig.broker.acks == [(7, 2)]


async def test_failed_sends_go_again_in_their_arrival_order(rig: Rig) -> None:
    for mid in (1, 2, 3):
        rig.broker.publish(mid, f'{{"n": {mid}}}'.encode())
    await settle()
    for send in rig.kafka.pending(RAW):
        send.delivery.set_exception(KafkaConnectionError("leader moved"))
    rig.broker.publish(4, b'{"n": 4}')
    await eventually(lambda: len(rig.kafka.pending(RAW)) == 4)
    # 4 came during the pause before the retry and went at once; 1, 2, 3 go again in order.
    resent = [s.value for s in rig.kafka.pending(RAW)]
    assert resent == [b'{"n": 4}', b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    for send in rig.kafka.pending(RAW):
        send.delivery.set_result(None)
    await settle()
    assert rig.broker.acked == [1, 2, 3, 4]


async def test_a_broken_producer_sequence_stops_the_gateway_without_acknowledging(
    rig: Rig,
) -> None:
    rig.broker.publish(1, b'{"n": 1}')
    rig.broker.publish(2, b'{"n": 2}')
    await settle()
    first, second = rig.kafka.pending(RAW)
    first.delivery.set_result(None)
    second.delivery.set_exception(OutOfOrderSequenceNumber("sequence broken"))
    await asyncio.wait_for(rig.gateway.wait_stopped(), 2)
    assert isinstance(rig.gateway.failure, OutOfOrderSequenceNumber)
    assert rig.broker.acked == [1]  # 2 stays with the broker, which redelivers it
    assert rig.kafka.stopped and not rig.broker.connected
    rig.broker.publish(3, b'{"n": 3}')  # nothing more is taken
    await settle()
    assert rig.kafka.attempts.count(RAW) == 2


def test_the_ack_queue_releases_acks_from_its_head_only() -> None:
    sent: list[int] = []
    queue = AckQueue(lambda slot: sent.append(slot.mid))
    slots = [queue.take(mid, 1, connection=1) for mid in (1, 2, 3)]
    assert queue.delivered(slots[1]) == 0
    assert queue.delivered(slots[0]) == 2
    assert sent == [1, 2] and len(queue) == 1
    queue.clear()
    late: AckSlot = slots[2]
    assert queue.delivered(late) == 0 and sent == [1, 2]
