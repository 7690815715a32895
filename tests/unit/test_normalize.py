"""The shared normalization step: canonical readings, one rejection per bad value."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from nakhon.config import ProcessorSettings
from nakhon.domain.identifiers import valid_sensor_id
from nakhon.domain.records import Decoded, Observation, PositionFix, Rejection, Stage
from nakhon.processors.codecs.base import TopicContext
from nakhon.processors.normalize import (
    REASONS,
    NormalizePolicy,
    clock_offset_s,
    normalize,
)

NOW = datetime(2024, 3, 1, 1, 0, tzinfo=UTC)
CTX = TopicContext("city/bangkok/aq-1/json", "bangkok", "aq-1", NOW)
POLICY = NormalizePolicy()


def _one(obs: Observation, policy: NormalizePolicy = POLICY) -> tuple[list[str], list[float]]:
    out = normalize(Decoded(observations=[obs]), CTX, policy)
    return [r.reason for r in out.rejections], [r.value for r in out.readings]


def test_good_reading_is_canonical() -> None:
    out = normalize(
        Decoded(observations=[Observation("AQ-1", "PM2.5", 0.041, "mg/m3", None)]), CTX, POLICY
    )
    (reading,) = out.readings
    assert reading.metric == "pm2_5"
    assert math.isclose(reading.value, 41.0)
    assert reading.sensor_id == "aq-1"
    assert reading.city == "bangkok"
    assert reading.time == NOW
    assert out.rejections == []


def test_time_is_converted_to_utc() -> None:
    local = datetime(2024, 3, 1, 8, 0, tzinfo=timezone(timedelta(hours=7)))
    out = normalize(
        Decoded(observations=[Observation("s1", "pm25", 1.0, None, local)]), CTX, POLICY
    )
    assert out.readings[0].time == NOW
    assert out.readings[0].time.tzinfo is UTC


@pytest.mark.parametrize(
    ("obs", "reason"),
    [
        (Observation("bad id!", "pm25", 1.0), "invalid_sensor_id"),
        (Observation("a" * 65, "pm25", 1.0), "invalid_sensor_id"),
        (Observation("s1", "pm25", math.nan), "not_finite"),
        (Observation("s1", "pm25", math.inf), "not_finite"),
        (Observation("s1", "pm25", 1001.0), "out_of_range"),
        (Observation("s1", "temperature", 350.0, "K"), "out_of_range"),
        (Observation("s1", "pm25", 1.0, "ppb"), "unknown_unit"),
        (Observation("s1", "pm25", 1.0, None, NOW + timedelta(seconds=301)), "time_in_future"),
        (Observation("s1", "pm25", 1.0, None, NOW - timedelta(days=31)), "time_too_old"),
    ],
)
def test_rejections(obs: Observation, reason: str) -> None:
    reasons, values = _one(obs)
    assert reasons == [reason]
    assert values == []
    assert reason in REASONS


def test_tolerances_are_inclusive() -> None:
    assert _one(Observation("s1", "pm25", 1.0, None, NOW + timedelta(seconds=300)))[0] == []
    assert _one(Observation("s1", "pm25", 1.0, None, NOW - timedelta(days=30)))[0] == []


def test_unknown_metric_kept_or_rejected() -> None:
    obs = Observation("s1", "Soil Moisture", 33.0)
    out = normalize(Decoded(observations=[obs]), CTX, POLICY)
    assert [r.metric for r in out.readings] == ["x_soil_moisture"]
    assert out.unknown_metrics == ["Soil Moisture"]
    strict = NormalizePolicy(strict_metrics=True)
    assert _one(obs, strict) == (["unknown_metric"], [])


def test_bad_values_do_not_cost_good_ones() -> None:
    decoded = Decoded(
        observations=[
            Observation("s1", "pm25", 12.0),
            Observation("s1", "pm10", -5.0),
            Observation("s1", "temperature", math.nan),
            Observation("s1", "humidity", 60.0),
        ],
        rejections=[Rejection("non_numeric_value", "vs", Stage.DECODE, "s1", "status")],
    )
    out = normalize(decoded, CTX, POLICY)
    assert [r.metric for r in out.readings] == ["pm2_5", "humidity"]
    assert [r.reason for r in out.rejections] == [
        "non_numeric_value",
        "out_of_range",
        "not_finite",
    ]
    assert all(r.stage is Stage.NORMALIZE for r in out.rejections[1:])


def test_duplicate_in_one_payload_keeps_first() -> None:
    decoded = Decoded(
        observations=[Observation("s1", "pm25", 12.0), Observation("s1", "PM2.5", 13.0)]
    )
    out = normalize(decoded, CTX, POLICY)
    assert [r.value for r in out.readings] == [12.0]
    assert [r.reason for r in out.rejections] == ["duplicate_reading"]


def test_positions() -> None:
    decoded = Decoded(
        positions=[
            PositionFix("Bus-12", 13.756, 100.502, 42.0, 90.0, NOW),
            PositionFix("bus-12", 91.0, 100.0),
            PositionFix("bus-12", 0.0, 0.0),
            PositionFix("bus-12", 13.7, 100.5, 400.0),
            PositionFix("bus-12", 13.7, 100.5, None, 361.0),
            PositionFix("bus-12", math.nan, 100.5),
        ]
    )
    out = normalize(decoded, CTX, POLICY)
    (position,) = out.positions
    assert position.vehicle_id == "bus-12"
    assert position.city == "bangkok"
    assert [r.reason for r in out.rejections] == [
        "out_of_range",
        "null_island",
        "out_of_range",
        "out_of_range",
        "not_finite",
    ]


def test_policy_from_settings() -> None:
    settings = ProcessorSettings(
        strict_metrics=True, future_tolerance_s=10.0, backfill_horizon_days=2.0
    )
    assert NormalizePolicy.from_settings(settings) == NormalizePolicy(True, 10.0, 2.0)


def test_clock_offset_and_sensor_id() -> None:
    assert clock_offset_s(NOW, NOW - timedelta(seconds=90)) == 90.0
    assert valid_sensor_id("AQ_7-b") == "aq_7-b"
    assert valid_sensor_id("") is None
    assert valid_sensor_id("a/b") is None


def _aliased(aliases: dict[str, str], strict: bool = True) -> NormalizePolicy:
    settings = ProcessorSettings(strict_metrics=strict, metric_aliases=aliases)
    return NormalizePolicy.from_settings(settings)


def test_an_operator_alias_names_a_catalogue_metric() -> None:
    policy = _aliased({"pm_two_five": "pm2_5"})
    out = normalize(Decoded(observations=[Observation("s1", "PM-Two-Five", 12.0)]), CTX, policy)
    assert [(r.metric, r.value) for r in out.readings] == [("pm2_5", 12.0)]
    assert out.rejections == []


def test_without_the_alias_strict_mode_rejects_the_name() -> None:
    assert _one(Observation("s1", "pm_two_five", 12.0), _aliased({}))[0] == ["unknown_metric"]


def test_an_operator_alias_wins_over_the_catalogue_and_converts_units() -> None:
    policy = _aliased({"co": "co2"})
    out = normalize(Decoded(observations=[Observation("s1", "co", 450.0, "ppm")]), CTX, policy)
    assert [r.metric for r in out.readings] == ["co2"]
    assert _one(Observation("s1", "pm25", 5.0), policy) == ([], [5.0])  # the rest unchanged


def test_an_alias_to_a_metric_not_in_the_catalogue_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match=r"pm2\.5x"):
        ProcessorSettings(metric_aliases={"pm_two_five": "pm2.5x"})
    with pytest.raises(ValueError, match="not in the catalogue"):
        NormalizePolicy.from_settings(
            ProcessorSettings.model_construct(metric_aliases={"x": "nope"})
        )


def test_metric_aliases_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from nakhon.config import Settings

    monkeypatch.setenv("NAKHON_PROCESSOR_METRIC_ALIASES", '{"pm_two_five": "pm2_5"}')
    assert Settings(_env_file=None).processor.metric_aliases == {"pm_two_five": "pm2_5"}  # type: ignore[call-arg]
