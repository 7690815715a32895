"""The records a processor produces: dead letters and normalized readings.

``nakhon.deadletter`` (DESIGN.md): key = MQTT topic, value = the original bytes,
headers ``reason`` (machine-readable code), ``detail`` (for a human),
``mqtt_topic``, ``received_at``, ``stage``; plus ``rejections``, a JSON list of
every rejection when a payload had several, and ``partial`` = ``true`` when the
payload's other values were stored.

A dead letter whose payload is larger than 900 KiB keeps only its head, with
headers ``truncated`` = ``true``, ``raw_partition`` and ``raw_offset`` (where
the whole original is in ``nakhon.raw``).

``nakhon.readings``: key = sensor id, value = JSON
``{"sensor_id", "city", "readings": [{"time", "metric", "value"}, ...]}``
(the readings one payload gave one sensor), header ``schema`` = ``1``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from nakhon.ingest.raw_record import epoch_us
from nakhon.processors.pipeline import DeadLetter
from nakhon.records import Reading

READINGS_SCHEMA_VERSION = b"1"
_MAX_HEADER_TEXT = 1000
#: ~80 bytes of JSON each: a record of readings stays far below Kafka's 1 MiB.
MAX_READINGS_PER_RECORD = 2000
#: A dead letter keeps at most this much of the payload; the rest is in nakhon.raw.
MAX_DEAD_LETTER_PAYLOAD = 900 * 1024


@dataclass(frozen=True, slots=True)
class OutRecord:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def dead_letter_record(letter: DeadLetter) -> OutRecord:
    first = letter.rejections[0]
    headers = [
        ("reason", first.reason.encode()),
        ("detail", first.detail[:_MAX_HEADER_TEXT].encode()),
        ("mqtt_topic", letter.record.mqtt_topic.encode()),
        ("received_at", str(epoch_us(letter.record.received_at)).encode()),
        ("stage", first.stage.value.encode()),
        ("partial", b"false" if letter.whole else b"true"),
    ]
    if len(letter.rejections) > 1:
        headers.append(
            (
                "rejections",
                orjson.dumps(
                    [
                        {
                            "reason": r.reason,
                            "detail": r.detail[:200],
                            "stage": r.stage.value,
                            "sensor_id": r.sensor_id,
                            "metric": r.metric,
                        }
                        for r in letter.rejections[:100]
                    ]
                ),
            )
        )
    payload = letter.record.payload
    if len(payload) > MAX_DEAD_LETTER_PAYLOAD:
        # Too large to send again with headers: keep the head and say where the
        # whole original is (nakhon.raw keeps it for the topic's retention).
        payload = payload[:MAX_DEAD_LETTER_PAYLOAD]
        headers += [
            ("truncated", b"true"),
            ("raw_partition", str(letter.record.partition).encode()),
            ("raw_offset", str(letter.record.offset).encode()),
        ]
    return OutRecord(letter.record.mqtt_topic.encode(), payload, headers)


def readings_records(readings: Sequence[Reading]) -> list[OutRecord]:
    """Records for ``nakhon.readings``: per sensor, at most :data:`MAX_READINGS_PER_RECORD`
    readings each, keyed by sensor id.

    Call it once per payload, so a record stays the size of what one payload
    gave one sensor (well inside Kafka's 1 MiB request limit), whatever the batch.
    """
    by_sensor: dict[str, list[Reading]] = defaultdict(list)
    for r in readings:
        by_sensor[r.sensor_id].append(r)
    headers = [("schema", READINGS_SCHEMA_VERSION)]
    return [
        OutRecord(
            sensor_id.encode(),
            orjson.dumps(
                {
                    "sensor_id": sensor_id,
                    "city": rs[0].city,
                    "readings": [
                        {"time": r.time, "metric": r.metric, "value": r.value}
                        for r in rs[i : i + MAX_READINGS_PER_RECORD]
                    ],
                }
            ),
            headers,
        )
        for sensor_id, rs in by_sensor.items()
        for i in range(0, len(rs), MAX_READINGS_PER_RECORD)
    ]
