"""Pure parts of the API: interval parsing, the bucket grid, the source choice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nakhon.api.errors import ApiError
from nakhon.api.params import as_utc, parse_bbox, parse_interval, parse_near
from nakhon.api.queries.series import (
    HOUR,
    MINUTE,
    RAW,
    SeriesRequest,
    bucket_count,
    bucket_starts,
    choose_source,
    fill_points,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("2w", 14 * 86400)],
)
def test_parse_interval(text: str, seconds: int) -> None:
    assert parse_interval("bucket", text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0s", "5", "m5", "1y", "5 m", "-1h", "400d", "1.5h"])
def test_parse_interval_rejects(text: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_interval("bucket", text)
    assert info.value.status == 400 and "bucket" in info.value.message


def test_naive_times_are_utc_and_overflow_is_a_400() -> None:
    assert as_utc(datetime(2026, 1, 1)) == datetime(2026, 1, 1, tzinfo=UTC)  # noqa: DTZ001
    from datetime import timezone

    with pytest.raises(ApiError):
        as_utc(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))))


def test_near_and_bbox() -> None:
    assert parse_near("13.75,100.5", 500).lat == 13.75
    assert parse_bbox("100,13,101,14").max_lat == 14
    for bad in ("1", "a,b", "91,0", "nan,1"):
        with pytest.raises(ApiError):
            parse_near(bad, 1)
    with pytest.raises(ApiError):
        parse_bbox("101,13,100,14")


def test_source_is_the_coarsest_rollup_on_whose_grid_the_range_lies() -> None:
    day = timedelta(days=1)
    assert choose_source(timedelta(hours=1), T0, T0 + day) is HOUR
    assert choose_source(timedelta(days=1), T0, T0 + day) is HOUR
    assert choose_source(timedelta(minutes=5), T0, T0 + day) is MINUTE
    assert choose_source(timedelta(hours=1), T0 + timedelta(minutes=1), T0 + day) is MINUTE
    assert choose_source(timedelta(seconds=30), T0, T0 + day) is RAW
    assert choose_source(timedelta(minutes=5), T0 + timedelta(seconds=1), T0 + day) is RAW


def test_bucket_grid_matches_time_bucket_origin() -> None:
    # 2000-01-03 (a Monday) is TimescaleDB's origin: weekly buckets start on Mondays.
    week = timedelta(weeks=1)
    starts = bucket_starts(T0, T0 + timedelta(days=10), week)
    assert all(s.weekday() == 0 for s in starts)
    assert bucket_count(T0, T0 + timedelta(minutes=10), timedelta(minutes=5)) == 2
    assert (
        bucket_count(T0 + timedelta(seconds=1), T0 + timedelta(minutes=10), timedelta(minutes=5))
        == 2
    )


def test_fill_modes() -> None:
    def req(fill: str) -> SeriesRequest:
        return SeriesRequest(
            "pm2_5",
            T0,
            T0 + timedelta(minutes=4),
            timedelta(minutes=1),
            "avg",
            (),
            "c",
            fill,  # type: ignore[arg-type]
        )

    values: dict[datetime, float | None] = {T0 + timedelta(minutes=1): 5.0}
    assert fill_points(values, req("none")) == [(T0 + timedelta(minutes=1), 5.0)]
    assert [v for _, v in fill_points(values, req("null"))] == [None, 5.0, None, None]
    assert [v for _, v in fill_points(values, req("previous"))] == [None, 5.0, 5.0, 5.0]
