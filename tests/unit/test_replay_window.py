"""--since/--until, --topic and the summary of the replay commands (nakhon/replay)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from nakhon.replay.replay_command import summary, valid_filter
from nakhon.replay.window import TimeSpecError, TimeWindow, epoch_ms, format_ms, parse_time

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28", datetime(2026, 11, 28, tzinfo=UTC)),
        ("2026-11-28T09:30", datetime(2026, 11, 28, 9, 30, tzinfo=UTC)),
        ("2026-11-28T09:30:00Z", datetime(2026, 11, 28, 9, 30, tzinfo=UTC)),
        ("2026-11-28T16:30+07:00", datetime(2026, 11, 28, 9, 30, tzinfo=UTC)),
        ("90m", NOW - timedelta(minutes=90)),
        ("6h", NOW - timedelta(hours=6)),
        ("2d", NOW - timedelta(days=2)),
        ("1.5h", NOW - timedelta(minutes=90)),
    ],
)
def test_times_are_iso_8601_in_utc_or_an_age(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "6 hours", "-2h", ""])
def test_anything_else_is_refused_with_the_forms(text: str) -> None:
    with pytest.raises(TimeSpecError, match="ISO 8601"):
        parse_time(text, now=NOW)


def test_a_window_holds_its_ends_and_refuses_an_inverted_range() -> None:
    window = TimeWindow(NOW - timedelta(hours=1), NOW)
    assert window.contains(epoch_ms(NOW))
    assert window.contains(epoch_ms(NOW - timedelta(hours=1)))
    assert not window.contains(epoch_ms(NOW) + 1)
    assert TimeWindow().contains(0)
    assert format_ms(epoch_ms(NOW)) == "2026-11-28T10:00:00Z"
    with pytest.raises(TimeSpecError, match="before"):
        TimeWindow(NOW, NOW - timedelta(seconds=1))


@pytest.mark.parametrize(
    ("mqtt_filter", "valid"),
    [("city/#", True), ("city/+/+/senml", True), ("#", True), ("city/a#", False),
     ("city/#/x", False), ("ci+ty/x", False), ("", False)],
)  # fmt: skip
def test_topic_filters_are_checked(mqtt_filter: str, valid: bool) -> None:
    assert valid_filter(mqtt_filter) is valid


def test_the_summary_says_what_was_sent_and_that_rows_are_idempotent() -> None:
    outcomes = Counter(read=10, selected=4, skipped_no_payload=1, sent=3)
    text = summary(outcomes, "nakhon.raw", dry_run=False)
    assert "skipped_no_payload" in text
    assert "sent 3 to nakhon.raw; rows are idempotent" in text
    assert "would send 3" in summary(outcomes, "nakhon.raw", dry_run=True)
