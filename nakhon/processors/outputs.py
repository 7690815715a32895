"""The records a processor produces: dead letters and normalized readings.

``nakhon.deadletter`` (docs/architecture.md): key = MQTT topic, value = the original bytes,
headers ``reason`` (machine-readable code), ``detail`` (for a human),
``mqtt_topic``, ``received_at``, ``stage``; plus ``rejections``, a JSON list of
every rejection when a payload had several, and ``partial`` = ``true`` when the
payload's other values were stored; ``replayed_from`` when the record was
one ``nakhon replay`` sent back (copied from the raw record, so the replay can
count what was rejected again).

A dead letter is sized to :data:`MAX_DEAD_LETTER_BYTES` all told (key, value,
every header, Kafka's record overhead), so hostile input cannot make one too
large for Kafka (1 MiB) and stall the partition on a retry that cannot succeed:
every header text is bounded (the ``rejections`` list's fields and length
too), then the payload keeps what is left, at most 900 KiB. A dead letter
whose payload or MQTT topic was cut has headers ``truncated`` = ``true``,
``raw_partition`` and ``raw_offset`` (where the whole original is in
``nakhon.raw``); when the ``rejections`` list was cut, ``rejections_total``
says how many there were. :func:`header_only_dead_letter` is the last resort
for a dead letter Kafka still refuses as too large.

``nakhon.readings``: key = sensor id, value = JSON
``{"sensor_id", "city", "readings": [{"time", "metric", "value"}, ...]}``
(the readings one payload gave one sensor), header ``schema`` = ``1``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from nakhon.domain.raw_record import epoch_us
from nakhon.domain.records import Reading, Rejection
from nakhon.processors.pipeline import DeadLetter

READINGS_SCHEMA_VERSION = b"1"
#: ~80 bytes of JSON each: a record of readings stays far below Kafka's 1 MiB.
MAX_READINGS_PER_RECORD = 2000
#: A dead letter, all told (:attr:`OutRecord.size`), stays within this many bytes:
#: under Kafka's 1 MiB record limit (aiokafka's ``max_request_size`` 1,048,576,
#: the broker's ``message.max.bytes`` 1,048,588), with room to spare.
MAX_DEAD_LETTER_BYTES = 1_000_000
#: A dead letter keeps at most this much of the payload; the rest is in nakhon.raw.
MAX_DEAD_LETTER_PAYLOAD = 900 * 1024
#: Bytes of one header text (``detail``, ``mqtt_topic``; the key too) at most.
_MAX_HEADER_TEXT = 1000
#: Bytes of the ``rejections`` header at most: its entries are listed while they fit.
_MAX_REJECTIONS_HEADER = 32 * 1024
_MAX_LISTED_REJECTIONS = 100
#: Characters of each field of a ``rejections`` entry at most (JSON may escape each to 6 bytes).
_MAX_REJECTION_DETAIL = 200
_MAX_REJECTION_FIELD = 80
#: What Kafka adds to a record: the record batch header (61 bytes) and the
#: record's own varints (at most 21), plus two varints per header; generous.
_RECORD_OVERHEAD = 1024
_HEADER_OVERHEAD = 10


@dataclass(frozen=True, slots=True)
class OutRecord:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]

    @property
    def size(self) -> int:
        """Bytes this record takes in a Kafka request, overestimated (never under)."""
        return _size(self.key, self.headers) + len(self.value)


def dead_letter_record(letter: DeadLetter) -> OutRecord:
    """The ``nakhon.deadletter`` record of ``letter``, within :data:`MAX_DEAD_LETTER_BYTES`."""
    record = letter.record
    topic = record.mqtt_topic.encode("utf-8", "replace")
    key = _bounded(record.mqtt_topic, _MAX_HEADER_TEXT)
    headers = _letter_headers(letter, key)
    rejections = _rejections_header(letter.rejections)
    if rejections is not None:
        headers += rejections
    pointers = _pointers(letter)
    room = MAX_DEAD_LETTER_BYTES - _size(key, headers + pointers)
    keep = max(0, min(len(record.payload), MAX_DEAD_LETTER_PAYLOAD, room))
    payload = record.payload
    if keep < len(payload) or len(key) < len(topic):
        # Too large to send again with headers, or a topic cut: keep the head and
        # say where the whole original is (nakhon.raw keeps it for its retention).
        payload = payload[:keep]
        headers += pointers
    return OutRecord(key, payload, headers)


def header_only_dead_letter(letter: DeadLetter) -> OutRecord:
    """``letter`` without its bytes or its list of rejections: a few KiB, whatever the input.

    For a dead letter Kafka refused as too large even so (a broker or topic
    limit below 1 MiB): it still says what came, why it was refused, and where
    the original is in ``nakhon.raw``.
    """
    key = _bounded(letter.record.mqtt_topic, _MAX_HEADER_TEXT)
    return OutRecord(key, b"", _letter_headers(letter, key) + _pointers(letter))


def _letter_headers(letter: DeadLetter, topic: bytes) -> list[tuple[str, bytes]]:
    first = letter.rejections[0]
    headers = [
        ("reason", _bounded(first.reason, _MAX_HEADER_TEXT)),
        ("detail", _bounded(first.detail, _MAX_HEADER_TEXT)),
        ("mqtt_topic", topic),
        ("received_at", str(epoch_us(letter.record.received_at)).encode()),
        ("stage", first.stage.value.encode()),
        ("partial", b"false" if letter.whole else b"true"),
    ]
    if letter.record.replayed_from is not None:
        headers.append(("replayed_from", _bounded(letter.record.replayed_from, _MAX_HEADER_TEXT)))
    return headers


def _rejections_header(rejections: Sequence[Rejection]) -> list[tuple[str, bytes]] | None:
    """``rejections`` (and ``rejections_total`` if not all fit) when there are several."""
    if len(rejections) < 2:
        return None
    entries: list[bytes] = []
    size = 2  # the brackets
    for r in rejections[:_MAX_LISTED_REJECTIONS]:
        entry = orjson.dumps(
            {
                "reason": _clean(r.reason),
                "detail": _clean(r.detail, _MAX_REJECTION_DETAIL),
                "stage": r.stage.value,
                "sensor_id": _clean(r.sensor_id),
                "metric": _clean(r.metric),
            }
        )
        size += len(entry) + 1
        if size > _MAX_REJECTIONS_HEADER:
            break
        entries.append(entry)
    headers = [("rejections", b"[" + b",".join(entries) + b"]")]
    if len(entries) < len(rejections):
        headers.append(("rejections_total", str(len(rejections)).encode()))
    return headers


def _pointers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    return [
        ("truncated", b"true"),
        ("raw_partition", str(letter.record.partition).encode()),
        ("raw_offset", str(letter.record.offset).encode()),
    ]


def _bounded(text: str, limit: int) -> bytes:
    """``text`` as UTF-8, at most ``limit`` bytes, cut at a character boundary; never raises."""
    encoded = text[:limit].encode("utf-8", "replace")
    if len(encoded) <= limit:
        return encoded
    return encoded[:limit].decode("utf-8", "ignore").encode()


def _clean(text: str | None, limit: int = _MAX_REJECTION_FIELD) -> str | None:
    """At most ``limit`` characters that orjson can encode (no lone surrogates)."""
    return None if text is None else text[:limit].encode("utf-8", "replace").decode()


def _size(key: bytes, headers: list[tuple[str, bytes]]) -> int:
    return (
        _RECORD_OVERHEAD
        + len(key)
        + sum(len(name.encode()) + len(value) + _HEADER_OVERHEAD for name, value in headers)
    )


def readings_records(readings: Sequence[Reading]) -> list[OutRecord]:
    """Records for ``nakhon.readings``: per sensor, at most :data:`MAX_READINGS_PER_RECORD`
    readings each, keyed by sensor id.

    The processor calls it once per batch: a sensor's readings of the batch
    travel together, in records of at most MAX_READINGS_PER_RECORD readings
    (about 160 kB, well inside Kafka's 1 MiB request limit).
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
