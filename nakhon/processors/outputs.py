"""The records a processor produces: dead letters and normalized readings.

``nakhon.deadletter`` (DESIGN.md): key = MQTT topic, value = the original bytes,
headers ``reason`` (machine-readable code), ``detail`` (for a human),
``mqtt_topic``, ``received_at``, ``stage``; plus ``rejections``, a JSON list of
every rejection when a payload had several, and ``partial`` = ``true`` when the
payload's other values were stored.

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
    return OutRecord(letter.record.mqtt_topic.encode(), letter.record.payload, headers)


def readings_records(readings: Sequence[Reading]) -> list[OutRecord]:
    """One record per sensor of the given readings, keyed by sensor id."""
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
                        {"time": r.time, "metric": r.metric, "value": r.value} for r in rs
                    ],
                }
            ),
            headers,
        )
        for sensor_id, rs in by_sensor.items()
    ]
