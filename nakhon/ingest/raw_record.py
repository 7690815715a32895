"""How an MQTT message becomes a record of ``nakhon.raw`` (DESIGN.md, "Kafka").

Key: the MQTT topic. Value: the payload bytes, untouched. Headers:
``mqtt_topic``, ``received_at`` (UTC, integer microseconds since the epoch, as
ASCII), ``gateway``, ``qos``, and ``content_type`` when MQTT 5 gave one.
The processor reads the same headers back with :func:`parse_headers`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class MqttMessage:
    """An MQTT PUBLISH as the gateway took it from the broker (not yet acknowledged)."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    received_at_us: int
    content_type: str | None = None
    #: Which MQTT connection delivered it: packet ids are only valid on their connection.
    connection: int = 0


def raw_headers(msg: MqttMessage, gateway: str) -> list[tuple[str, bytes]]:
    headers = [
        ("mqtt_topic", msg.topic.encode()),
        ("received_at", str(msg.received_at_us).encode()),
        ("gateway", gateway.encode()),
        ("qos", str(msg.qos).encode()),
    ]
    if msg.content_type:
        headers.append(("content_type", msg.content_type.encode()))
    return headers


def received_at_from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def epoch_us(when: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, exactly (no float)."""
    return (when - _EPOCH) // timedelta(microseconds=1)


def parse_headers(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    """The headers of a raw record as text (unknown bytes replaced, never raising)."""
    return {k: v.decode("utf-8", "replace") for k, v in headers}
