"""The gateway's MQTT side: a persistent MQTT 5 session with manual QoS 1 acks.

paho runs its network loop in its own thread; messages cross into the asyncio
loop through ``call_soon_threadsafe``. Backpressure is MQTT 5's own: the
CONNECT carries ``Receive Maximum`` = the gateway's in-flight bound, so the
broker never sends more unacknowledged messages than that (MQTT 5 §4.9) and
keeps the rest queued in the session.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from nakhon.config import MqttSettings
from nakhon.domain.raw_record import MqttMessage
from nakhon.ingest.paho_client import BurstClient
from nakhon.mqtt_connection import MqttEndpoint, subscription

log = logging.getLogger(__name__)

#: MQTT 5 caps Receive Maximum at 65,535.
_MAX_RECEIVE_MAXIMUM = 65_535


def end_session(settings: MqttSettings, timeout_s: float = 10.0) -> bool:
    """Make the broker forget the session of ``settings.client_id``.

    A gateway taken out of service for good must do this: the broker keeps
    giving its persistent session a share of the shared subscriptions' messages
    until the session expires. Returns True once the broker confirmed.
    """
    done = threading.Event()
    endpoint = MqttEndpoint.from_settings(settings)
    client = endpoint.client(settings.client_id)
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    client.on_connect = lambda *args: done.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    endpoint.connect(client, clean_start=True, properties=props)
    client.loop_start()
    try:
        return done.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass(frozen=True, slots=True)
class ConnectionChange:
    """The MQTT connection ``connection`` went up or down."""

    connection: int
    up: bool


class MqttSource:
    """Subscribes to its topic filters (shared, with a group) and hands messages to asyncio."""

    def __init__(
        self,
        settings: MqttSettings,
        max_inflight: int,
        on_message: Callable[[MqttMessage], None],
        on_connection_change: Callable[[int, bool], None],
        *,
        drain: bool = False,
    ) -> None:
        self._settings = settings
        #: Draining a session (``nakhon gateway --drain``): unsubscribe instead of
        #: subscribing, take what the broker still holds, end the session on stop.
        self._drain_session = drain
        self._max_inflight = min(max_inflight, _MAX_RECEIVE_MAXIMUM)
        self._deliver = on_message
        self._on_connection_change = on_connection_change
        self._loop: asyncio.AbstractEventLoop | None = None
        # Messages and connection changes, in the order paho saw them: a message
        # must never overtake the news that its connection is gone.
        self._handoff: list[MqttMessage | ConnectionChange] = []
        self._handoff_lock = threading.Lock()
        #: Messages of the burst paho is parsing (its thread only), handed over at its end.
        self._burst: list[MqttMessage | ConnectionChange] = []
        self._connection = 0
        self._accepting = True
        self.connected = False
        #: True once the broker granted every subscription on the current connection.
        self.subscribed = False
        self._endpoint = MqttEndpoint.from_settings(settings)
        self._client = cast(
            BurstClient,
            self._endpoint.client(settings.client_id, manual_ack=True, client_class=BurstClient),
        )
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else None
            self._client.username_pw_set(settings.username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_burst_end = self._end_burst

    @property
    def subscriptions(self) -> list[str]:
        group = self._settings.share_group
        return [subscription(group, f) for f in self._settings.topic_filters]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Connect (retrying in the background until the broker answers)."""
        self._loop = loop
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._settings.session_expiry_s
        props.ReceiveMaximum = self._max_inflight
        self._client.connect_async(
            self._endpoint.host,
            self._endpoint.port,
            keepalive=self._settings.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    def stop_accepting(self) -> None:
        """Ignore messages from now on: unacknowledged, the broker redelivers them later."""
        self._accepting = False

    @property
    def connection(self) -> int:
        """The number of the current (or last) MQTT connection."""
        return self._connection

    def ack_many(self, mids: Sequence[int], connection: int) -> None:
        """PUBACK the QoS 1 messages ``mids`` in this order, in one write, if still connected."""
        if self.connected and connection == self._connection:
            self._client.ack_many(mids)

    def stop(self) -> None:
        """Disconnect cleanly; the session (and what it queues) lives on in the broker.

        Draining, the session ends with the connection (expiry 0).
        """
        props = None
        if self._drain_session:
            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
        self._client.disconnect(properties=props)
        self._client.loop_stop()

    # paho's thread below -------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error(
                "MQTT broker %s refused the connection of %s: %s (check NAKHON_MQTT_USERNAME, "
                "NAKHON_MQTT_PASSWORD and NAKHON_MQTT_CLIENT_ID: nakhon gateways add prints them)",
                self._endpoint,
                self._settings.username or "an anonymous client",
                reason,
            )
            return
        self._connection += 1
        self.connected = True
        if self._drain_session:
            # Nothing new for this session; what it holds is delivered all the same.
            log.info(
                "connected to MQTT %s (session %s), draining: unsubscribing from %s",
                self._endpoint,
                "resumed" if flags.session_present else "new: nothing to drain",
                ", ".join(self.subscriptions),
            )
            client.unsubscribe(self.subscriptions)
            self.subscribed = True
            self._notify(self._connection, True)
            return
        log.info(
            "connected to MQTT %s (session %s), subscribing to %s",
            self._endpoint,
            "resumed" if flags.session_present else "new",
            ", ".join(self.subscriptions),
        )
        client.subscribe([(s, SubscribeOptions(qos=1)) for s in self.subscriptions])
        self._notify(self._connection, True)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [s for s, r in zip(self.subscriptions, reasons, strict=False) if r.is_failure]
        if refused:
            # Without these subscriptions the gateway would stand idle while
            # devices' messages queue nowhere: say so loudly and stay unready.
            self.subscribed = False
            log.error(
                "the broker refused the subscriptions %s (not authorized for this gateway's "
                "role?); nothing is forwarded from them",
                ", ".join(refused),
            )
        else:
            self.subscribed = True

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected = False
        if reason.is_failure:
            log.warning("MQTT connection lost (%s); reconnecting", reason)
        self._notify(self._connection, False)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if not self._accepting or self._loop is None:
            return
        props = getattr(msg, "properties", None)
        content_type = getattr(props, "ContentType", None) if props is not None else None
        message = MqttMessage(
            topic=msg.topic,
            payload=bytes(msg.payload),
            qos=msg.qos,
            mid=msg.mid,
            received_at_us=time.time_ns() // 1000,
            content_type=content_type,
            connection=self._connection,
        )
        # Handed over with the rest of its burst: one wake-up of the event
        # loop per burst of messages, not one per message (each is a syscall).
        self._burst.append(message)

    def _end_burst(self) -> None:
        """Paho's thread, after a burst: hand its messages to the event loop, in order."""
        if not self._burst or self._loop is None:
            return
        burst, self._burst = self._burst, []
        with self._handoff_lock:
            wake = not self._handoff
            self._handoff += burst
        if wake:
            self._loop.call_soon_threadsafe(self._drain_handoff)

    def _drain_handoff(self) -> None:
        """Event-loop side of the handoff: deliver everything waiting, in order."""
        with self._handoff_lock:
            items, self._handoff = self._handoff, []
        for item in items:
            if isinstance(item, ConnectionChange):
                self._on_connection_change(item.connection, item.up)
            else:
                self._deliver(item)

    def _notify(self, connection: int, up: bool) -> None:
        # After the messages read before it: none may overtake the news of its connection.
        self._burst.append(ConnectionChange(connection, up))
        self._end_burst()
