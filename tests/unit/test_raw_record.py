"""Reading a nakhon.raw record back: hostile headers never stop the processor."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from aiokafka import ConsumerRecord

from nakhon.domain.raw_record import (
    decode_raw_record,
    received_at_from_header,
    received_at_from_kafka_ms,
)

RECEIVED = datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=UTC)
KAFKA_MS = 1795766405000  # 2026-11-27T08:00:05Z
KAFKA_TIME = datetime(2026, 11, 27, 8, 0, 5, tzinfo=UTC)


def consumer_record(
    headers: Sequence[tuple[str, bytes]], timestamp: int = KAFKA_MS
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="nakhon.raw",
        partition=3,
        offset=42,
        timestamp=timestamp,
        timestamp_type=0,
        key=b"city/rayong/aq-1/json",
        value=b'{"pm25": 12}',
        checksum=None,
        serialized_key_size=21,
        serialized_value_size=12,
        headers=headers,
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("1795766400123456", RECEIVED),
        ("0", datetime(1970, 1, 1, tzinfo=UTC)),
        ("99999999999999999999", None),  # 20 digits: past datetime's range
        ("253402300799999999", None),  # 9999-12-31: in range, but no gateway's clock
        ("9" * 5000, None),  # past int()'s digit limit
        ("-1795766400123456", None),
        ("+1795766400123456", None),
        (" 1795766400123456", None),
        ("1795766400.123456", None),
        ("١٢٣", None),  # Arabic-Indic digits are digits to str.isdigit
        ("\x00\ufffd\ufffd", None),  # garbage bytes, as parse_headers decodes them
        ("", None),
    ],
)
def test_a_received_at_header_is_parsed_or_refused_never_raising(
    header: str, expected: datetime | None
) -> None:
    assert received_at_from_header(header) == expected


@pytest.mark.parametrize(
    ("ms", "expected"),
    [(KAFKA_MS, KAFKA_TIME), (-1, None), (2**63 - 1, None), (-(2**63), None)],
)
def test_a_kafka_timestamp_is_parsed_or_refused_never_raising(
    ms: int, expected: datetime | None
) -> None:
    assert received_at_from_kafka_ms(ms) == expected


def test_a_raw_record_keeps_its_received_at() -> None:
    record = decode_raw_record(
        consumer_record(
            [("mqtt_topic", b"city/rayong/aq-1/json"), ("received_at", b"1795766400123456")]
        )
    )
    assert (record.mqtt_topic, record.received_at) == ("city/rayong/aq-1/json", RECEIVED)
    assert (record.partition, record.offset, record.payload) == (3, 42, b'{"pm25": 12}')


@pytest.mark.parametrize(
    "header",
    [b"99999999999999999999", b"-5", b"\x00\xff\xfe", b"", b"9" * 5000, None],
)
def test_a_hostile_received_at_falls_back_to_the_kafka_timestamp(header: bytes | None) -> None:
    # A null header value is legal in Kafka: the header list is typed bytes only.
    headers: list[tuple[str, bytes]] = [("received_at", header)]  # type: ignore[list-item]
    record = decode_raw_record(consumer_record(headers))
    assert record.received_at == KAFKA_TIME
    assert record.mqtt_topic == "city/rayong/aq-1/json"  # from the key


def test_a_record_with_no_time_at_all_is_taken_as_received_now() -> None:
    before = datetime.now(UTC)
    record = decode_raw_record(consumer_record([("received_at", b"99999999999999999999")], -1))
    assert before <= record.received_at <= datetime.now(UTC)
