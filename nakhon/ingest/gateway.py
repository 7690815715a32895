"""The ingest gateway: MQTT in, ``nakhon.raw`` out, a PUBACK only after Kafka's ack.

A dumb, fast, reliable pipe (docs/architecture.md): it never parses payloads. For each
message taken from the broker it produces one Kafka record (acks=all,
idempotent producer, batched with linger and compressed); when Kafka
acknowledges it, the message's slot in the :class:`AckQueue` is done and the
PUBACK leaves in arrival order. A crash before that and the broker redelivers
the message to this client's persistent session.

When Kafka is away a send fails; the message stays unacknowledged and is sent
again after a capped backoff, in the background, while the broker holds back
new messages once ``max_inflight`` are unacknowledged (MQTT 5 Receive Maximum).
Receive Maximum does not count QoS 0 messages, so the broker never holds those
back: at most ``max_queued_qos0`` of them wait for Kafka, and further ones are
dropped (QoS 0 is at most once), counted and logged now and then.

A failed send is retried ahead of newer messages, in the order the messages
came. An error that breaks the idempotent producer's sequence
(``OutOfOrderSequenceNumber`` and its kind: Kafka then refuses every later
batch of that producer) cannot be retried away: the gateway stops with
:attr:`Gateway.failure` set, its command exits non-zero and the supervisor
starts a new process with a new producer; the broker redelivers what was not
acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

from nakhon.config import GatewaySettings, KafkaSettings
from nakhon.domain.raw_record import MqttMessage, raw_headers
from nakhon.ingest.ack_queue import AckQueue, AckSlot
from nakhon.ingest.metrics import GatewayMetrics
from nakhon.kafka_client import RecordProducer

log = logging.getLogger(__name__)

_RETRY_MIN_S = 0.2
_RETRY_MAX_S = 10.0
#: At most one warning about dropped QoS 0 messages per this many seconds.
_DROP_WARNING_INTERVAL_S = 10.0
#: Errors after which this producer's records are refused for good (its sequence is broken).
_PRODUCER_BROKEN = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
)
#: Seconds a broken producer is given to stop.
_BROKEN_STOP_S = 5.0


class MessageSource(Protocol):
    """What the gateway calls on its MQTT side (:class:`~nakhon.ingest.mqtt_source.MqttSource`)."""

    connected: bool
    subscribed: bool

    def start(self, loop: asyncio.AbstractEventLoop) -> None: ...
    def stop_accepting(self) -> None: ...
    def ack_many(self, mids: Sequence[int], connection: int) -> None:
        """PUBACK these QoS 1 messages in this order, if ``connection`` is still the live one."""
        ...

    def stop(self) -> None: ...


#: Builds the gateway's source from the gateway's two callbacks: a message taken
#: from the broker, and a connection (its number) going up or down.
SourceFactory = Callable[
    [Callable[[MqttMessage], None], Callable[[int, bool], None]], MessageSource
]


class Gateway:
    """Forwards MQTT messages to Kafka; ``async with`` starts and drains it.

    Its clients are given, not built (``nakhon/ingest/command.py`` builds the
    production ones): a test can hand it stand-ins.
    """

    def __init__(
        self,
        kafka_settings: KafkaSettings,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        producer: RecordProducer,
        source: SourceFactory,
    ) -> None:
        self._kafka_settings = kafka_settings
        self._settings = settings
        self._metrics = metrics
        self._producer = producer
        self._source = source(self._on_message, self._on_connection_change)
        self._acks = AckQueue(self._send_puback)
        # Read when scraped, not set per message.
        metrics.inflight.set_function(lambda: len(self._acks))
        #: PUBACKs due, written together once the deliveries at hand are handled.
        self._due_acks: list[AckSlot] = []
        self._ack_flush_scheduled = False
        self._connection = 0
        self._queue: deque[tuple[MqttMessage, AckSlot, float]] = deque()
        #: Messages whose send failed, to go again before ``_queue``, in arrival order.
        self._retry: deque[tuple[MqttMessage, AckSlot, float]] = deque()
        #: QoS 0 messages in ``_queue``: not yet handed to Kafka.
        self._queued_qos0 = 0
        self._qos0_dropped_unreported = 0
        self._qos0_drop_reported_at = -math.inf
        self._wakeup = asyncio.Event()
        self._pending: set[asyncio.Future[Any]] = set()
        self._forwarder: asyncio.Task[None] | None = None
        self._kafka_ok = False
        self._stopping = False
        self._stopped = asyncio.Event()
        #: Set when the gateway stopped because its producer broke (the process should exit 1).
        self.failure: BaseException | None = None
        #: When the last message came from the broker (monotonic); None before the first.
        self.last_message_at: float | None = None

    # lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        await self._start_producer()
        self._forwarder = asyncio.create_task(self._forward(), name="forward-to-kafka")
        self._source.start(asyncio.get_running_loop())

    async def _start_producer(self) -> None:
        delay = _RETRY_MIN_S
        while True:
            try:
                await self._producer.start()
                self._kafka_ok = True
                return
            except KafkaError as exc:
                log.warning("Kafka not reachable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Stop taking messages, deliver and acknowledge those taken, disconnect."""
        if self._stopping:
            return
        self._stopping = True
        self._source.stop_accepting()
        try:
            await asyncio.wait_for(self._drain(), drain_timeout_s)
        except TimeoutError:
            log.warning(
                "%d messages not delivered within %.0fs: left unacknowledged, "
                "the broker will redeliver them",
                len(self._acks),
                drain_timeout_s,
            )
        if self._forwarder is not None:
            self._forwarder.cancel()
        self._flush_acks()
        self._source.stop()
        await self._producer.stop()
        self._stopped.set()
        log.info("gateway stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _drain(self) -> None:
        # Polled: completion arrives through producer callbacks, not one awaitable.
        while self._queue or self._retry or self._pending:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # health -----------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if not self._source.connected:
            return False, "MQTT broker not connected"
        if not self._source.subscribed:
            return False, "MQTT subscriptions not (yet) granted by the broker"
        if not self._kafka_ok:
            return False, "Kafka not reachable"
        return True, f"{len(self._acks)} messages in flight"

    # the hot path (event loop thread) ----------------------------------------

    def _on_connection_change(self, connection: int, up: bool) -> None:
        self._metrics.mqtt_connected.set(1 if up else 0)
        if up:
            if connection > 1:
                self._metrics.reconnects.inc()
            self._connection = connection
        else:
            # Packet ids die with the connection: what was not acknowledged on
            # it will be redelivered by the broker on the next one.
            self._acks.clear()

    @property
    def in_flight(self) -> int:
        """Messages taken from the broker and not yet acknowledged to it."""
        return len(self._acks)

    def _on_message(self, msg: MqttMessage) -> None:
        if msg.connection != self._connection or self._stopping:
            return  # from a dead connection: the broker redelivers it
        self.last_message_at = time.monotonic()
        self._metrics.received.inc()
        if msg.qos == 0:
            if self._queued_qos0 >= self._settings.max_queued_qos0:
                self._drop_qos0(msg)
                return
            self._queued_qos0 += 1
        slot = self._acks.take(msg.mid, msg.qos, msg.connection)
        self._queue.append((msg, slot, time.perf_counter()))
        self._wakeup.set()

    def _drop_qos0(self, msg: MqttMessage) -> None:
        """Drop a QoS 0 message Kafka has no room for yet; warn once an interval, not each time."""
        self._metrics.qos0_dropped.inc()
        self._qos0_dropped_unreported += 1
        now = time.monotonic()
        if now - self._qos0_drop_reported_at < _DROP_WARNING_INTERVAL_S:
            return
        log.warning(
            "%d QoS 0 messages already wait for Kafka (max_queued_qos0): dropped %d more "
            "(QoS 0 is at most once), the latest on %r",
            self._queued_qos0,
            self._qos0_dropped_unreported,
            msg.topic[:120],
        )
        self._qos0_dropped_unreported = 0
        self._qos0_drop_reported_at = now

    async def _forward(self) -> None:
        """Hand queued messages to the producer, in order; one task, no task per message."""
        queue, retry = self._queue, self._retry
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while retry or queue:
                msg, slot, t0 = retry.popleft() if retry else queue.popleft()
                if msg.qos == 0:
                    self._queued_qos0 -= 1
                if msg.connection != self._connection:
                    continue
                await self._send(msg, slot, t0)

    async def _send(self, msg: MqttMessage, slot: AckSlot, t0: float) -> None:
        raw = self._kafka_settings.raw_topic
        try:
            await self._produce(
                msg, slot, t0, raw, msg.payload, raw_headers(msg, self._settings.name)
            )
        except MessageSizeTooLargeError as exc:
            await self._dead_letter_too_large(msg, slot, t0, exc)

    async def _dead_letter_too_large(
        self, msg: MqttMessage, slot: AckSlot, t0: float, exc: BaseException
    ) -> None:
        """No retry can help: record that it came, and why it is not in nakhon.raw."""
        log.error(
            "a %d-byte payload on %s is larger than Kafka accepts; dead-lettered without it",
            len(msg.payload),
            msg.topic[:200],
        )
        headers = [
            *raw_headers(msg, self._settings.name),
            ("reason", b"payload_too_large"),
            ("detail", f"{len(msg.payload)} bytes: {exc}"[:1000].encode()),
            ("stage", b"ingest"),
        ]
        try:
            await self._produce(msg, slot, t0, self._kafka_settings.deadletter_topic, b"", headers)
        except MessageSizeTooLargeError:
            # Even its headers are too large (a topic this long): the log line
            # above is all that is left of it. Acknowledge, or it blocks the rest.
            self._acknowledge(slot)

    async def _produce(
        self,
        msg: MqttMessage,
        slot: AckSlot,
        t0: float,
        topic: str,
        value: bytes,
        headers: list[tuple[str, bytes]],
    ) -> None:
        """Hand one record to the producer; its delivery acknowledges ``slot``.

        While Kafka is away this blocks, retrying: the broker stops sending once
        max_inflight messages are unacknowledged (backpressure). A record too
        large for Kafka raises MessageSizeTooLargeError: no retry can help it.
        """
        delay = _RETRY_MIN_S
        while True:
            try:
                delivery = await self._producer.send(
                    topic, value=value, key=msg.topic.encode(), headers=headers
                )
                break
            except MessageSizeTooLargeError:
                raise
            except KafkaError as exc:
                self._kafka_down(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                if msg.connection != self._connection or self._stopping:
                    return  # unacknowledged: the broker redelivers it
        self._pending.add(delivery)
        delivery.add_done_callback(lambda d: self._on_delivered(d, msg, slot, t0, topic))

    def _on_delivered(
        self, fut: asyncio.Future[Any], msg: MqttMessage, slot: AckSlot, t0: float, topic: str
    ) -> None:
        self._pending.discard(fut)
        exc = fut.exception()
        if (
            isinstance(exc, MessageSizeTooLargeError)
            and topic == self._kafka_settings.deadletter_topic
        ):
            log.error(
                "Kafka refused even the bodiless dead letter of %s as too large", msg.topic[:200]
            )
            self._acknowledge(slot)
            return
        if isinstance(exc, MessageSizeTooLargeError):
            # Refused by the broker itself (a topic's max.message.bytes below
            # ours): resending cannot help, and would block every later PUBACK.
            task = asyncio.ensure_future(self._dead_letter_too_large(msg, slot, t0, exc))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return
        if isinstance(exc, _PRODUCER_BROKEN):
            self._break(exc)
            return
        if exc is not None:
            # Not stored: send it again, ahead of newer messages, after a pause.
            self._kafka_down(exc)
            self._loop().call_later(_RETRY_MIN_S, self._requeue, msg, slot, t0)
            return
        self._kafka_ok = True
        self._metrics.forwarded.inc()
        self._metrics.send_latency.observe(time.perf_counter() - t0)
        self._acknowledge(slot)

    def _acknowledge(self, slot: AckSlot) -> None:
        acked = self._acks.delivered(slot)
        if acked:
            self._metrics.acknowledged.inc(acked)

    def _requeue(self, msg: MqttMessage, slot: AckSlot, t0: float) -> None:
        # Taken already: it goes back even past max_queued_qos0.
        if msg.qos == 0:
            self._queued_qos0 += 1
        self._retry.append((msg, slot, t0))
        self._wakeup.set()

    def _break(self, exc: BaseException) -> None:
        """This producer can deliver nothing more: stop, so a new process starts a new one."""
        if self.failure is not None:
            return
        self.failure = exc
        log.error(
            "Kafka refuses this producer's records for good (%s): stopping so that a new "
            "process starts with a new producer; the broker redelivers the %d messages not "
            "acknowledged",
            exc,
            len(self._acks),
        )
        self._stopping = True
        self._source.stop_accepting()
        task = asyncio.ensure_future(self._abort())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _abort(self) -> None:
        if self._forwarder is not None:
            self._forwarder.cancel()
        self._flush_acks()  # those Kafka did acknowledge
        self._source.stop()
        try:
            await asyncio.wait_for(self._producer.stop(), _BROKEN_STOP_S)
        except (TimeoutError, KafkaError) as exc:
            log.warning("the broken producer did not stop cleanly (%s)", exc)
        self._stopped.set()

    def _kafka_down(self, exc: BaseException) -> None:
        if self._kafka_ok:
            log.warning("Kafka send failed (%s); retrying every %.1fs at most", exc, _RETRY_MAX_S)
        self._kafka_ok = False
        self._metrics.send_errors.inc()

    @staticmethod
    def _loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _send_puback(self, slot: AckSlot) -> None:
        """Queue ``slot``'s PUBACK; those due in one turn of the event loop leave in one write.

        Kafka acknowledges a produce request's records together: their
        delivery callbacks run in the same turn, and so their PUBACKs cost the
        broker connection one write, not one each.
        """
        if slot.qos == 0:
            return
        self._due_acks.append(slot)
        if not self._ack_flush_scheduled:
            self._ack_flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        self._ack_flush_scheduled = False
        due, self._due_acks = self._due_acks, []
        start = 0
        for end in range(1, len(due) + 1):
            # Packet ids are valid on their own connection only: one write per connection.
            if end == len(due) or due[end].connection != due[start].connection:
                self._source.ack_many([s.mid for s in due[start:end]], due[start].connection)
                start = end
