"""What the processor sends to nakhon.deadletter and nakhon.readings, and DB error classes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest
from aiokafka import ConsumerRecord
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from nakhon.domain.raw_record import decode_raw_record
from nakhon.domain.records import RawRecord, Reading, Rejection, Stage
from nakhon.processors.outputs import (
    MAX_DEAD_LETTER_BYTES,
    MAX_DEAD_LETTER_PAYLOAD,
    MAX_READINGS_PER_RECORD,
    dead_letter_record,
    header_only_dead_letter,
    readings_records,
)
from nakhon.processors.pipeline import DeadLetter
from nakhon.storage.errors import classify, is_transient

NOW = datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=UTC)


def letter(payload: bytes, *rejections: Rejection, whole: bool = True) -> DeadLetter:
    record = RawRecord("city/rayong/aq-1/senml", payload, NOW, partition=4, offset=77)
    return DeadLetter(record, rejections, whole)


def test_a_dead_letter_keeps_the_original_bytes_and_says_why() -> None:
    out = dead_letter_record(letter(b"\x00garbage", Rejection("malformed_json", "x", Stage.DECODE)))
    headers = dict(out.headers)
    assert out.key == b"city/rayong/aq-1/senml"
    assert out.value == b"\x00garbage"
    assert headers["reason"] == b"malformed_json"
    assert headers["stage"] == b"decode"
    assert headers["mqtt_topic"] == b"city/rayong/aq-1/senml"
    assert headers["received_at"] == b"1795766400123456"
    assert headers["partial"] == b"false"
    assert "rejections" not in headers


def test_several_rejections_are_all_listed() -> None:
    rejections = (
        Rejection("out_of_range", "humidity 140", Stage.NORMALIZE, "aq-1", "humidity"),
        Rejection("not_finite", "pm10 nan", Stage.NORMALIZE, "aq-1", "pm10"),
    )
    headers = dict(dead_letter_record(letter(b"[]", *rejections, whole=False)).headers)
    assert headers["partial"] == b"true"
    listed = orjson.loads(headers["rejections"])
    assert [(r["reason"], r["metric"]) for r in listed] == [
        ("out_of_range", "humidity"),
        ("not_finite", "pm10"),
    ]


def test_an_oversized_payload_is_truncated_and_points_back_to_nakhon_raw() -> None:
    big = b"x" * (MAX_DEAD_LETTER_PAYLOAD + 10)
    out = dead_letter_record(letter(big, Rejection("malformed_json", "x", Stage.DECODE)))
    headers = dict(out.headers)
    assert len(out.value) == MAX_DEAD_LETTER_PAYLOAD
    assert (headers["truncated"], headers["raw_partition"], headers["raw_offset"]) == (
        b"true",
        b"4",
        b"77",
    )


def test_readings_are_grouped_by_sensor_and_split_into_bounded_records() -> None:
    n = MAX_READINGS_PER_RECORD + 5
    readings = [Reading(NOW + timedelta(seconds=i), "aq-1", "pm2_5", i, "rayong") for i in range(n)]
    readings.append(Reading(NOW, "aq-2", "pm10", 3.0, "rayong"))
    records = readings_records(readings)
    assert [(r.key, len(orjson.loads(r.value)["readings"])) for r in records] == [
        (b"aq-1", MAX_READINGS_PER_RECORD),
        (b"aq-1", 5),
        (b"aq-2", 1),
    ]
    first = orjson.loads(records[0].value)
    assert first["city"] == "rayong"
    assert first["readings"][0] == {
        "time": "2026-11-27T08:00:00.123456+00:00",
        "metric": "pm2_5",
        "value": 0,
    }
    assert dict(records[0].headers) == {"schema": b"1"}


@pytest.mark.parametrize(
    ("sqlstate", "kind", "transient"),
    [
        ("22003", "data", False),  # numeric value out of range: the rows are to blame
        ("23502", "data", False),  # not-null violation
        ("40P01", "retry", True),  # deadlock
        ("08006", "retry", True),  # connection failure
        ("53100", "retry", True),  # disk full
        ("25006", "retry", False),  # read-only transaction: needs an operator
        ("42P01", "retry", False),  # table missing: run nakhon migrate
        ("42501", "retry", False),  # permission denied
    ],
)
def test_database_errors_blame_rows_only_for_data_errors(
    sqlstate: str, kind: str, transient: bool
) -> None:
    exc = psycopg.Error.__new__(psycopg.errors.lookup(sqlstate))
    assert classify(exc) == kind
    assert is_transient(exc) is transient


# Hostile input: a dead letter is never too large for Kafka -------------------

HOSTILE_TOPIC = "city/rayong/" + "t" * 60_000 + "/json"


def hostile_letter() -> DeadLetter:
    """A 900 KB payload, 100 rejections naming 10 KB metrics, a 60 KB MQTT topic."""
    record = RawRecord(HOSTILE_TOPIC, b"x" * 900_000, NOW, partition=4, offset=77)
    rejections = tuple(
        Rejection("unknown_unit", "d" * 5_000, Stage.NORMALIZE, "s" * 10_000, "m" * 10_000)
        for _ in range(100)
    )
    return DeadLetter(record, rejections, whole=True)


def test_a_hostile_dead_letter_is_sized_to_the_budget() -> None:
    out = dead_letter_record(hostile_letter())
    headers = dict(out.headers)
    assert out.size <= MAX_DEAD_LETTER_BYTES
    # aiokafka's own estimate (what max_request_size is checked against) agrees.
    assert (
        DefaultRecordBatchBuilder.estimate_size_in_bytes(out.key, out.value, out.headers)
        <= MAX_DEAD_LETTER_BYTES
    )
    assert out.value == b"x" * len(out.value)
    assert len(out.key) <= 1000
    assert out.key == headers["mqtt_topic"]
    assert HOSTILE_TOPIC.encode().startswith(out.key)
    assert (headers["truncated"], headers["raw_partition"], headers["raw_offset"]) == (
        b"true",
        b"4",
        b"77",
    )
    assert headers["reason"] == b"unknown_unit"
    listed = orjson.loads(headers["rejections"])
    assert 0 < len(listed) <= 100
    assert all(len(r["metric"]) <= 80 and len(r["sensor_id"]) <= 80 for r in listed)
    assert headers["rejections_total"] == b"100"


def test_every_header_text_is_bounded_whatever_its_characters() -> None:
    thai = "ก" * 5000  # 3 bytes each in UTF-8
    record = RawRecord("city/rayong/" + thai, b"{}", NOW, partition=1, offset=2)
    rejections = (
        Rejection(thai, thai, Stage.DECODE, thai, thai),
        Rejection("x", "\x00" * 5000 + "\ud800", Stage.DECODE, "\ud800", None),
    )
    out = dead_letter_record(DeadLetter(record, rejections, whole=True))
    assert out.size <= MAX_DEAD_LETTER_BYTES
    for name, value in out.headers:
        assert len(value) <= 32 * 1024, name
        value.decode()  # whole characters only
    assert len(orjson.loads(dict(out.headers)["rejections"])) == 2


def test_a_normal_dead_letter_is_unchanged_by_the_budget() -> None:
    rejections = (
        Rejection("out_of_range", "humidity 140", Stage.NORMALIZE, "aq-1", "humidity"),
        Rejection("not_finite", "pm10 nan", Stage.NORMALIZE, "aq-1", "pm10"),
    )
    out = dead_letter_record(letter(b'{"humidity": 140}', *rejections, whole=False))
    assert out.key == b"city/rayong/aq-1/senml"
    assert out.value == b'{"humidity": 140}'
    assert out.headers == [
        ("reason", b"out_of_range"),
        ("detail", b"humidity 140"),
        ("mqtt_topic", b"city/rayong/aq-1/senml"),
        ("received_at", b"1795766400123456"),
        ("stage", b"normalize"),
        ("partial", b"true"),
        (
            "rejections",
            b'[{"reason":"out_of_range","detail":"humidity 140","stage":"normalize",'
            b'"sensor_id":"aq-1","metric":"humidity"},{"reason":"not_finite",'
            b'"detail":"pm10 nan","stage":"normalize","sensor_id":"aq-1","metric":"pm10"}]',
        ),
    ]


def test_the_last_resort_dead_letter_keeps_why_and_where_but_no_bytes() -> None:
    out = header_only_dead_letter(hostile_letter())
    headers = dict(out.headers)
    assert out.value == b""
    assert out.size < 8 * 1024
    assert "rejections" not in headers
    assert (headers["reason"], headers["stage"], headers["truncated"]) == (
        b"unknown_unit",
        b"normalize",
        b"true",
    )
    assert (headers["raw_partition"], headers["raw_offset"]) == (b"4", b"77")


def _raw(headers: list[tuple[str, bytes]]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="nakhon.raw",
        partition=3,
        offset=42,
        timestamp=1795766405000,
        timestamp_type=0,
        key=b"city/rayong/aq-1/senml",
        value=b"[]",
        checksum=None,
        serialized_key_size=22,
        serialized_value_size=2,
        headers=headers,
    )


def test_a_replayed_record_keeps_its_replayed_from_into_its_dead_letters() -> None:
    origin = b"deadletter:run-7f3a:0:123"
    record = decode_raw_record(_raw([("replayed_from", origin)]))
    assert record.replayed_from == origin.decode()
    dead = DeadLetter(record, (Rejection("unknown_sensor", "aq-1", Stage.ENRICH),), True)
    assert dict(dead_letter_record(dead).headers)["replayed_from"] == origin
    assert dict(header_only_dead_letter(dead).headers)["replayed_from"] == origin


def test_a_record_never_replayed_has_no_replayed_from_header() -> None:
    record = decode_raw_record(_raw([("received_at", b"1795766400123456")]))
    assert record.replayed_from is None
    dead = DeadLetter(record, (Rejection("malformed_json", "x", Stage.DECODE),), True)
    assert "replayed_from" not in dict(dead_letter_record(dead).headers)
    assert "replayed_from" not in dict(header_only_dead_letter(dead).headers)


def test_a_hostile_replayed_from_is_bounded() -> None:
    record = decode_raw_record(_raw([("replayed_from", b"\xff" * 5000)]))
    dead = DeadLetter(record, (Rejection("malformed_json", "x", Stage.DECODE),), True)
    assert len(dict(dead_letter_record(dead).headers)["replayed_from"]) <= 1000
