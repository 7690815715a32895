"""--wait's pieces that need no Kafka: the run's tag on replayed_from, the verdict line."""

from __future__ import annotations

from collections import Counter

from nakhon.domain.raw_record import decode_raw_record
from nakhon.replay.wait import Rejudged, new_run_id, run_tag
from tests.unit.test_replay_letters import Record, letter


def test_every_run_has_its_own_tag_on_replayed_from() -> None:
    one, two = new_run_id(), new_run_id()
    assert one != two
    key, value, headers = letter().raw_record("nakhon.deadletter", run_tag(one))
    assert dict(headers)["replayed_from"] == f"nakhon.deadletter/2/17#{one}".encode()
    # The processor reads it back, to copy into a dead letter of the record.
    raw = decode_raw_record(Record(key, value, headers, timestamp=1))
    assert raw.replayed_from is not None and raw.replayed_from.endswith(run_tag(one))
    assert not raw.replayed_from.endswith(run_tag(two))


def test_the_verdict_says_what_was_stored_and_what_rejected_again() -> None:
    assert Rejudged(5).line() == "sent 5, stored or already stored 5, rejected again 0"
    verdict = Rejudged(1200, Counter({"unknown_sensor": 3, "out_of_range": 1}))
    assert verdict.line() == (
        "sent 1,200, stored or already stored 1,196, rejected again 4"
        " (by reason: out_of_range 1, unknown_sensor 3)"
    )
