"""Counts of dead letters by reason, stage, city and sensor, and the time range they cover."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nakhon.domain.raw_record import received_at_from_header
from nakhon.replay.letters import DeadLetterView, escape_text
from nakhon.replay.window import format_ms

UNKNOWN = "?"


@dataclass
class LetterStats:
    """What ``nakhon deadletters stats`` reports; :meth:`add` one letter at a time."""

    topic: str
    letters: int = 0
    payload_bytes: int = 0
    replayable: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    #: The earliest and latest original arrival (``received_at``, µs) of the letters.
    first_received_us: int | None = None
    last_received_us: int | None = None
    by_reason: Counter[str] = field(default_factory=Counter)
    by_stage: Counter[str] = field(default_factory=Counter)
    by_city: Counter[str] = field(default_factory=Counter)
    by_sensor: Counter[str] = field(default_factory=Counter)

    def add(self, letter: DeadLetterView) -> None:
        self.letters += 1
        self.payload_bytes += len(letter.value)
        self.replayable += letter.skip_reason() is None
        ts = letter.timestamp_ms
        self.first_ms = ts if self.first_ms is None else min(self.first_ms, ts)
        self.last_ms = ts if self.last_ms is None else max(self.last_ms, ts)
        if received_at_from_header(letter.headers.get("received_at", "")) is not None:
            us = int(letter.headers["received_at"])
            lo, hi = self.first_received_us, self.last_received_us
            self.first_received_us = us if lo is None else min(lo, us)
            self.last_received_us = us if hi is None else max(hi, us)
        self.by_reason[letter.reason] += 1
        self.by_stage[letter.stage] += 1
        self.by_city[letter.city or UNKNOWN] += 1
        self.by_sensor[letter.sensor_id or UNKNOWN] += 1

    def as_json(self, top: int) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "letters": self.letters,
            "replayable": self.replayable,
            "payload_bytes": self.payload_bytes,
            "first": None if self.first_ms is None else format_ms(self.first_ms),
            "last": None if self.last_ms is None else format_ms(self.last_ms),
            "first_received_at": _us(self.first_received_us),
            "last_received_at": _us(self.last_received_us),
            "by_reason": dict(self.by_reason.most_common()),
            "by_stage": dict(self.by_stage.most_common()),
            "by_city": dict(self.by_city.most_common(top)),
            "by_sensor": dict(self.by_sensor.most_common(top)),
        }

    def as_text(self, top: int) -> str:
        if self.letters == 0 or self.first_ms is None or self.last_ms is None:
            return f"{self.topic}: no dead letters in the range read"
        lines = [
            f"{self.topic}: {self.letters:,} dead letters, rejected "
            f"{format_ms(self.first_ms)} .. {format_ms(self.last_ms)}",
        ]
        if self.first_received_us is not None:
            lines.append(
                f"  received {_us(self.first_received_us)} .. {_us(self.last_received_us)}"
            )
        lines.append(
            f"  {self.replayable:,} replayable (whole payload kept), "
            f"{self.payload_bytes:,} payload bytes"
        )
        for title, counts, limit in (
            ("reason", self.by_reason, None),
            ("stage", self.by_stage, None),
            ("city", self.by_city, top),
            ("sensor", self.by_sensor, top),
        ):
            shown = counts.most_common(limit)
            more = len(counts) - len(shown)
            lines.append(f"by {title}" + (f" (top {limit} of {len(counts)})" if more else "") + ":")
            width = max(len(name) for name, _ in shown)
            lines += [f"  {escape_text(name):<{width}}  {n:>9,}" for name, n in shown]
        return "\n".join(lines)


def _us(us: int | None) -> str | None:
    return None if us is None else format_ms(us // 1000)
