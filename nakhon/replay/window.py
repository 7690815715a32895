"""The time range a command reads: ``--since`` and ``--until`` as the operator writes them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

TIME_HELP = (
    "ISO 8601 (2026-11-28, 2026-11-28T09:30, 2026-11-28T16:30+07:00; without an offset: UTC) "
    "or an age: 90m, 6h, 2d ago"
)


class TimeSpecError(ValueError):
    """A ``--since``/``--until`` value that is neither an ISO 8601 time nor an age."""


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An aware UTC datetime from ISO 8601 or an age (``6h``: six hours before ``now``)."""
    value = text.strip()
    if match := _RELATIVE.fullmatch(value):
        amount, unit = match.groups()
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: float(amount)})
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TimeSpecError(f"{text!r} is not a time: use {TIME_HELP}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def epoch_ms(when: datetime) -> int:
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """[since, until] of Kafka record timestamps (ms); either end may be open."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and self.until < self.since:
            raise TimeSpecError(
                f"--until {self.until.isoformat()} is before --since {self.since.isoformat()}"
            )

    @property
    def since_ms(self) -> int | None:
        return None if self.since is None else epoch_ms(self.since)

    @property
    def until_ms(self) -> int | None:
        return None if self.until is None else epoch_ms(self.until)

    def contains(self, timestamp_ms: int) -> bool:
        since, until = self.since_ms, self.until_ms
        return (since is None or timestamp_ms >= since) and (until is None or timestamp_ms <= until)


def format_ms(timestamp_ms: int) -> str:
    """A Kafka timestamp as ISO 8601 UTC to the second, ``Z``-suffixed."""
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=timestamp_ms)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
