"""Dead letters read back (nakhon/replay/letters.py, stats.py): names, selection, escaping."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from nakhon.config import DEFAULT_ROUTES
from nakhon.domain.raw_record import decode_raw_record
from nakhon.replay.letters import (
    REPLAY_GATEWAY,
    DeadLetterView,
    LetterFilter,
    TopicNames,
    escape_bytes,
    escape_text,
    read_letter,
)
from nakhon.replay.stats import LetterStats

NAMES = TopicNames(DEFAULT_ROUTES)
RECEIVED_US = "1795849802412345"


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = 1_795_849_900_000
    partition: int = 2
    offset: int = 17


def letter(
    reason: str = "unknown_sensor",
    topic: str = "city/khon_kaen/AQ-17/senml",
    value: bytes = b'[{"n":"pm25","v":12}]',
    **extra: str,
) -> DeadLetterView:
    headers = {
        "reason": reason,
        "detail": "not in the registry",
        "mqtt_topic": topic,
        "received_at": RECEIVED_US,
        "stage": "enrich",
        "partial": "false",
    } | extra
    return read_letter(
        Record(topic.encode(), value, [(k, v.encode()) for k, v in headers.items()]), NAMES
    )


def test_city_and_sensor_come_from_the_route_of_the_topic() -> None:
    assert NAMES.names("city/khon_kaen/AQ-17/senml") == ("khon_kaen", "aq-17")
    assert NAMES.names("v3/app@ttn/devices/node-9/up") == (None, "node-9")
    assert NAMES.names("application/1/device/70b3d57ed0000009/event/up") == (
        None,
        "70b3d57ed0000009",
    )
    assert NAMES.names("somewhere/else") == (None, None)
    assert NAMES.names("city/khon_kaen/" + "x" * 70 + "/senml") == ("khon_kaen", None)


def test_a_letter_names_its_reasons_city_and_sensor() -> None:
    rejections = [
        {"reason": "out_of_range", "sensor_id": "aq-17", "stage": "normalize"},
        {"reason": "not_finite", "sensor_id": "aq-17", "stage": "normalize"},
    ]
    view = letter("out_of_range", rejections=json.dumps(rejections))
    assert (view.reason, view.stage, view.city, view.sensor_id) == (
        "out_of_range",
        "enrich",
        "khon_kaen",
        "aq-17",
    )
    assert view.reasons == ("out_of_range", "not_finite")


def test_the_sensor_falls_back_to_the_rejections_when_no_route_names_it() -> None:
    rejections = json.dumps([{"reason": "unknown_metric", "sensor_id": "Dev-1"}])
    view = letter("unknown_metric", topic="elsewhere/dev-1", rejections=rejections)
    assert (view.city, view.sensor_id) == (None, "dev-1")
    assert letter(topic="elsewhere", rejections="[not json").sensor_id is None


def test_the_filter_takes_any_listed_reason_and_sensor() -> None:
    view = letter("out_of_range", rejections=json.dumps([{"reason": "not_finite"}]))
    assert LetterFilter().matches(view)
    assert LetterFilter(reasons=frozenset({"not_finite"})).matches(view)
    assert not LetterFilter(reasons=frozenset({"unknown_sensor"})).matches(view)
    assert LetterFilter(sensors=frozenset({"aq-17", "other"})).matches(view)
    assert not LetterFilter(sensors=frozenset({"other"})).matches(view)


def test_a_letter_goes_back_as_the_raw_record_it_came_from() -> None:
    view = letter()
    assert view.skip_reason() is None
    key, value, headers = view.raw_record("nakhon.deadletter")
    assert key == b"city/khon_kaen/AQ-17/senml"
    assert value == b'[{"n":"pm25","v":12}]'
    assert dict(headers) == {
        "mqtt_topic": b"city/khon_kaen/AQ-17/senml",
        "received_at": RECEIVED_US.encode(),
        "gateway": REPLAY_GATEWAY.encode(),
        "replayed_from": b"nakhon.deadletter/2/17",
    }
    # The processor reads it back with the original arrival time.
    raw = decode_raw_record(Record(key, value, headers, timestamp=1))
    assert raw.received_at.timestamp() == pytest.approx(int(RECEIVED_US) / 1e6)
    assert raw.mqtt_topic == "city/khon_kaen/AQ-17/senml"


def test_the_gateways_own_headers_are_kept_when_the_letter_has_them() -> None:
    _, _, headers = letter(
        gateway="gw-1", qos="1", content_type="application/senml+json"
    ).raw_record("dl")
    assert dict(headers)["gateway"] == b"gw-1"
    assert dict(headers)["qos"] == b"1"
    assert dict(headers)["content_type"] == b"application/senml+json"


@pytest.mark.parametrize(
    ("view", "outcome"),
    [
        (letter("payload_too_large", value=b""), "skipped_no_payload"),
        (letter("malformed_json", truncated="true"), "skipped_truncated"),
        (letter("storage_rejected", value=b"", truncated="true"), "skipped_truncated"),
        (letter(received_at="-5"), "skipped_no_received_at"),
    ],
)
def test_letters_without_their_whole_payload_are_not_replayed(
    view: DeadLetterView, outcome: str
) -> None:
    assert view.skip_reason() == outcome


def test_escaping_leaves_no_control_character_and_keeps_thai() -> None:
    hostile = "ok\n\x1b[31mred\u202eevil\\x41 อุดร".encode() + b"\xff\x00"
    text = escape_bytes(hostile)
    assert text == "ok\\n\\x1b[31mred\\u202eevil\\\\x41 อุดร\\xff\\x00"
    assert all(ch.isprintable() for ch in text)
    assert escape_text("a\tb") == "a\\tb"


def test_stats_count_by_reason_stage_city_and_sensor_with_the_range() -> None:
    stats = LetterStats("nakhon.deadletter")
    for view in [letter(), letter(), letter("malformed_json", topic="city/phuket/b-1/json")]:
        stats.add(view)
    stats.add(letter("payload_too_large", value=b"", stage="ingest"))
    report = stats.as_json(top=1)
    assert report["letters"] == 4
    assert report["replayable"] == 3
    assert report["by_reason"] == {"unknown_sensor": 2, "malformed_json": 1, "payload_too_large": 1}
    assert report["by_stage"] == {"enrich": 3, "ingest": 1}
    assert report["by_city"] == {"khon_kaen": 3}
    assert report["by_sensor"] == {"aq-17": 3}
    assert report["first"] == report["last"] == "2026-11-28T07:11:40Z"
    assert report["first_received_at"] == "2026-11-28T07:10:02Z"
    text = stats.as_text(top=1)
    assert "by sensor (top 1 of 2):" in text
    assert "unknown_sensor" in text
