"""The ``nakhon.raw`` record: how the gateway writes an MQTT message, how the processor reads it.

Key: the MQTT topic. Value: the payload bytes, untouched. Headers:
``mqtt_topic``, ``received_at`` (UTC, integer microseconds since the epoch, as
ASCII), ``gateway``, ``qos``, and ``content_type`` when MQTT 5 gave one
(``docs/architecture.md``, "Kafka"). The gateway writes them with
:func:`raw_headers`; the processor reads a record back with
:func:`decode_raw_record`. Both sides import this module and nothing of each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from nakhon.domain.records import RawRecord

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: No gateway's clock is past this: the room left before the year 9999 keeps
#: the arithmetic done on a received_at (time windows, relative SenML times)
#: from overflowing.
LATEST_RECEIVED_AT = datetime(3000, 1, 1, tzinfo=UTC)
_LATEST_US = (LATEST_RECEIVED_AT - _EPOCH) // timedelta(microseconds=1)
_MAX_US_DIGITS = len(str(_LATEST_US))


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


def received_at_from_header(value: str) -> datetime | None:
    """A ``received_at`` header as a datetime; None unless it is one, never raising.

    A record of ``nakhon.raw`` may come from anyone who can write to the topic:
    a header of 20 digits, a sign, garbage or nothing must not stop the
    processor, whose caller then falls back to the Kafka timestamp. A time
    past :data:`LATEST_RECEIVED_AT` is refused too.
    """
    if not (0 < len(value) <= _MAX_US_DIGITS and value.isascii() and value.isdigit()):
        return None
    us = int(value)
    return received_at_from_us(us) if us <= _LATEST_US else None


def received_at_from_kafka_ms(ms: int) -> datetime | None:
    """A Kafka record timestamp (ms) as a datetime; None if absent (-1) or out of range."""
    return received_at_from_us(ms * 1000) if 0 <= ms <= _LATEST_US // 1000 else None


def epoch_us(when: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, exactly (no float)."""
    return (when - _EPOCH) // timedelta(microseconds=1)


def parse_headers(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    """The headers of a raw record as text, never raising (bad bytes replaced, null as "")."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in headers}


class KafkaRecord(Protocol):
    """The fields of a consumed Kafka record the decoder reads (aiokafka's ``ConsumerRecord``)."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


def decode_raw_record(msg: KafkaRecord) -> RawRecord:
    """A ``nakhon.raw`` Kafka record as the pipeline's :class:`RawRecord`, never raising.

    The topic falls back to the record's key, ``received_at`` to the Kafka
    timestamp and then to now: a record may come from anyone who can write to
    the topic, and none of it may stop the processor.
    """
    headers = parse_headers(msg.headers or ())
    topic = headers.get("mqtt_topic") or (msg.key or b"").decode("utf-8", "replace")
    received_at = (
        received_at_from_header(headers.get("received_at", ""))
        or received_at_from_kafka_ms(msg.timestamp)
        or datetime.now(UTC)  # neither is a time: only a hostile writer does that
    )
    return RawRecord(
        mqtt_topic=topic,
        payload=msg.value or b"",
        received_at=received_at,
        gateway=headers.get("gateway", ""),
        content_type=headers.get("content_type"),
        partition=msg.partition,
        offset=msg.offset,
        replayed_from=headers.get("replayed_from") or None,
    )
