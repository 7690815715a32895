"""A ``nakhon.deadletter`` record read back: what was refused, why, and can it go again.

Pure functions over a consumed record (no I/O). The headers are those of
``docs/architecture.md`` ("Kafka"): ``reason``, ``detail``, ``stage``,
``mqtt_topic``, ``received_at``, ``partial``, ``rejections``, ``truncated``;
the gateway's ``payload_too_large`` letters carry the raw headers too
(``gateway``, ``qos``, ``content_type``) and no bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from nakhon.domain.identifiers import valid_sensor_id
from nakhon.domain.raw_record import KafkaRecord, parse_headers, received_at_from_header

#: What the replay writes into the ``gateway`` header when the letter does not
#: say which gateway took the message (the processors' letters do not).
REPLAY_GATEWAY = "nakhon-replay"
#: Header naming where a replayed record came from (``<topic>/<partition>/<offset>#<run id>``).
REPLAYED_FROM = "replayed_from"


class TopicNames:
    """City and sensor id of an MQTT topic, by the processors' routes (``pattern=codec``).

    The same placeholder rule as the processors' router: ``{city}`` and
    ``{sensor_id}`` capture one level each, other ``{names}`` match one level.
    Only names are extracted here, for counting and selecting; nothing is decoded.
    """

    def __init__(self, routes: Sequence[str]) -> None:
        self._patterns = [
            tuple(spec.partition("=")[0].strip().split("/")) for spec in routes if "=" in spec
        ]

    def names(self, topic: str) -> tuple[str | None, str | None]:
        """(city, sensor id) of ``topic``; None for what its route does not name."""
        levels = topic.split("/")
        for pattern in self._patterns:
            if len(pattern) != len(levels):
                continue
            captured: dict[str, str] = {}
            for want, got in zip(pattern, levels, strict=True):
                if want.startswith("{") and want.endswith("}"):
                    captured[want[1:-1]] = got
                elif want != got:
                    break
            else:
                city = captured.get("city")
                sensor = captured.get("sensor_id")
                return (
                    city.lower() if city else None,
                    valid_sensor_id(sensor) if sensor else None,
                )
        return None, None


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    """One dead letter as the operator's commands see it."""

    key: bytes
    value: bytes
    headers: dict[str, str]
    timestamp_ms: int
    partition: int
    offset: int
    city: str | None
    sensor_id: str | None
    #: Every reason of the letter: ``reason`` first, then those of ``rejections``.
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        return self.headers.get("reason", "") or "?"

    @property
    def stage(self) -> str:
        return self.headers.get("stage", "") or "?"

    @property
    def detail(self) -> str:
        return self.headers.get("detail", "")

    @property
    def mqtt_topic(self) -> str:
        return self.headers.get("mqtt_topic") or self.key.decode("utf-8", "replace")

    def skip_reason(self) -> str | None:
        """Why this letter cannot be replayed (an outcome name), or None if it can.

        Without its whole payload there is nothing to send: the gateway's
        ``payload_too_large`` letters and the header-only ones have no bytes,
        a ``truncated`` one only the head of them (the whole original is in
        ``nakhon.raw`` at ``raw_partition``/``raw_offset``, for its retention).
        Without a valid ``received_at`` the processors would judge it as now.
        """
        if self.headers.get("truncated") == "true":
            return "skipped_truncated"
        if not self.value:
            return "skipped_no_payload"
        if received_at_from_header(self.headers.get("received_at", "")) is None:
            return "skipped_no_received_at"
        return None

    def raw_record(
        self, source_topic: str, run_tag: str = ""
    ) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        """(key, value, headers) of the ``nakhon.raw`` record this letter came from.

        The key and bytes are the letter's, ``received_at`` the original
        arrival (so the time policy judges the payload as then); ``gateway``,
        ``qos`` and ``content_type`` are kept when the letter has them, and a
        ``replayed_from`` header says which letter this is (``<topic>/<partition>/<offset>``,
        then ``run_tag``: the replay run's ``#<run id>``).
        """
        h = self.headers
        headers = [
            ("mqtt_topic", self.mqtt_topic.encode()),
            ("received_at", h["received_at"].encode()),
            ("gateway", (h.get("gateway") or REPLAY_GATEWAY).encode()),
        ]
        headers += [(name, h[name].encode()) for name in ("qos", "content_type") if h.get(name)]
        origin = f"{source_topic}/{self.partition}/{self.offset}{run_tag}"
        headers.append((REPLAYED_FROM, origin.encode()))
        return self.key, self.value, headers


def read_letter(record: KafkaRecord, topics: TopicNames) -> DeadLetterView:
    """A consumed dead letter as a :class:`DeadLetterView`, never raising."""
    headers = parse_headers(record.headers or ())
    key = record.key or b""
    topic = headers.get("mqtt_topic") or key.decode("utf-8", "replace")
    city, sensor = topics.names(topic)
    listed = _rejections(headers.get("rejections", ""))
    if sensor is None:
        sensor = next((valid_sensor_id(s) for _, s in listed if s), None)
    first = headers.get("reason", "") or "?"
    reasons = tuple(dict.fromkeys([first, *(r for r, _ in listed if r)]))
    return DeadLetterView(
        key=key,
        value=record.value or b"",
        headers=headers,
        timestamp_ms=record.timestamp,
        partition=record.partition,
        offset=record.offset,
        city=city,
        sensor_id=sensor,
        reasons=reasons,
    )


def _rejections(text: str) -> list[tuple[str, str]]:
    """(reason, sensor id) of each entry of a ``rejections`` header; [] if it is not one."""
    if not text:
        return []
    try:
        entries = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(entries, list):
        return []
    return [
        (str(e.get("reason") or ""), str(e.get("sensor_id") or ""))
        for e in entries
        if isinstance(e, dict)
    ]


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which letters a command takes: any of ``reasons`` and any of ``sensors`` (empty: all)."""

    reasons: frozenset[str] = frozenset()
    sensors: frozenset[str] = frozenset()

    def matches(self, letter: DeadLetterView) -> bool:
        if self.reasons and not self.reasons.intersection(letter.reasons):
            return False
        return not self.sensors or letter.sensor_id in self.sensors


def escape_bytes(data: bytes) -> str:
    """``data`` as text safe for a terminal, repr-like: nothing in it is a control character.

    Valid UTF-8 that prints (Thai too) stays as it is; a backslash is doubled;
    control and format characters (newlines, ESC, bidi overrides) are escaped
    as Python does (``\\n``, ``\\x1b``, ``\\u202e``) and bytes that are not
    UTF-8 as ``\\xNN``.
    """
    out: list[str] = []
    for ch in data.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(repr(ch)[1:-1])
    return "".join(out)


def escape_text(text: str) -> str:
    """A header text (a topic, a detail) safe for a terminal, as :func:`escape_bytes`."""
    return escape_bytes(text.encode("utf-8", "replace"))
