"""The pipeline returns complete, frozen outcomes, and names the step a bug was in."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from typing import NoReturn

import pytest

from nakhon.config import DEFAULT_ROUTES
from nakhon.domain.records import Decoded, RawRecord, Stage
from nakhon.processors import pipeline as pipeline_module
from nakhon.processors.codecs.base import TopicContext
from nakhon.processors.enrich import SensorDirectory
from nakhon.processors.normalize import NormalizePolicy
from nakhon.processors.pipeline import BatchOutcome, Pipeline
from nakhon.processors.routing import Route, Router

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
GOOD = RawRecord("city/rayong/aq-1/json", b'{"pm25": 12, "humidity": 140}', NOW)


class BuggyCodec:
    """A codec with a bug: it raises what it should never raise."""

    name = "buggy"

    def decode(self, payload: bytes, ctx: TopicContext) -> Decoded:
        fields: dict[str, Decoded] = {}
        return fields["missing"]


def pipeline() -> Pipeline:
    router = Router(DEFAULT_ROUTES, "unknown")
    router.routes.insert(0, Route(("city", "{city}", "{sensor_id}", "buggy"), BuggyCodec(), None))
    return Pipeline(router, NormalizePolicy(), SensorDirectory({}, ["rayong"]))


def boom(*args: object, **kwargs: object) -> NoReturn:
    raise ZeroDivisionError("a bug")


def test_an_outcome_is_complete_and_frozen() -> None:
    outcome = pipeline().process(GOOD)
    assert [r.metric for r in outcome.readings] == ["pm2_5"]
    assert [(r.reason, r.stage) for r in outcome.rejections] == [("out_of_range", Stage.NORMALIZE)]
    assert not outcome.whole_rejection
    assert isinstance(outcome.readings, tuple) and isinstance(outcome.rejections, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.readings = ()  # type: ignore[misc]
    batch = pipeline().process_batch([GOOD])
    assert isinstance(batch, BatchOutcome) and isinstance(batch.outcomes, tuple)


@pytest.mark.parametrize(
    ("patch", "reason", "stage"),
    [
        (None, "codec_error", Stage.DECODE),
        ("normalize", "normalize_error", Stage.NORMALIZE),
        ("enrich", "enrich_error", Stage.ENRICH),
    ],
)
def test_a_bug_dead_letters_the_payload_with_the_step_it_was_in(
    patch: str | None,
    reason: str,
    stage: Stage,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if patch is not None:
        monkeypatch.setattr(pipeline_module, patch, boom)
    topic = "city/rayong/aq-1/buggy" if patch is None else GOOD.mqtt_topic
    with caplog.at_level(logging.ERROR, logger="nakhon.processors.pipeline"):
        outcome = pipeline().process(RawRecord(topic, GOOD.payload, NOW))
    assert (outcome.readings, outcome.positions, outcome.whole_rejection) == ((), (), True)
    [rejection] = outcome.rejections
    assert (rejection.reason, rejection.stage) == (reason, stage)
    assert rejection.detail.startswith(("KeyError", "ZeroDivisionError"))
    assert caplog.records[0].exc_info is not None  # the traceback, for whoever fixes it


def test_a_buggy_payload_costs_no_other_payload_of_the_batch() -> None:
    bad = RawRecord("city/rayong/aq-2/buggy", b"{}", NOW)
    first, second, third = pipeline().process_batch([GOOD, bad, GOOD]).outcomes
    assert first == third and len(first.readings) == 1
    assert [r.reason for r in second.rejections] == ["codec_error"]
