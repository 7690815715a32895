"""``replay raw --overwrite`` without services: the batch's keys, the summary's words."""

from __future__ import annotations

from datetime import UTC, datetime

from nakhon.domain.records import RawRecord, Reading
from nakhon.processors.pipeline import RecordOutcome
from nakhon.replay.overwrite import OverwriteReport, TableCounts, _Batch
from nakhon.storage.writer import UpsertCounts

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 28, 10, 1, tzinfo=UTC)


def outcome(*readings: Reading) -> RecordOutcome:
    return RecordOutcome(RawRecord("city/khon_kaen/s1/senml", b"", T0), readings=readings)


def test_a_key_read_twice_keeps_the_record_read_last_and_is_counted() -> None:
    batch = _Batch()
    batch.add(outcome(Reading(T0, "s1", "pm2_5", 1.0, "khon_kaen")))
    batch.add(outcome(Reading(T0, "s1", "pm2_5", 2.0, "khon_kaen")))
    batch.add(outcome(Reading(T1, "s1", "pm2_5", 3.0, "khon_kaen")))
    assert len(batch) == 2
    assert batch.duplicates == 1
    assert [r.value for r in batch.readings.values()] == [2.0, 3.0]


def test_counts_add_up_and_keep_the_widest_time_range() -> None:
    counts = TableCounts()
    counts.add(UpsertCounts(1, 2, 3, T1, T1))
    counts.add(UpsertCounts(0, 1, 0, T0, T0))
    counts.add(UpsertCounts(0, 0, 4))
    assert (counts.inserted, counts.changed, counts.unchanged) == (1, 3, 7)
    assert (counts.first, counts.last) == (T0, T1)


def test_the_summary_says_what_changed_and_a_dry_run_that_nothing_was_written() -> None:
    report = OverwriteReport("nakhon.raw", dry_run=False)
    report.readings.add(UpsertCounts(0, 5, 1, T0, T1))
    report.rejected_by_reason.update(["out_of_range"])
    text = report.text()
    assert "5 readings changed, 0 inserted, 1 unchanged" in text
    assert "rejected by reason (not dead-lettered):\n  out_of_range" in text
    dry = OverwriteReport("nakhon.raw", dry_run=True)
    dry.readings.add(UpsertCounts(2, 5, 1, T0, T1))
    assert "dry run: would insert 2 readings and change 5 (1 unchanged); nothing written" in (
        dry.text()
    )
