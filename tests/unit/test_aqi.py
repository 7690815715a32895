"""AQI: every breakpoint boundary of both tables, bands, dominant pollutant, decisions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nakhon.domain.aqi import (
    TH_TABLES,
    US_O3_1H,
    US_TABLES,
    Concentrations,
    sub_index,
    thai_aqi,
    truncate,
    us_aqi,
)

_TH_ROWS = [(name, row) for name, table in TH_TABLES.items() for row in table.rows]
_US_ROWS = [(name, row) for name, table in US_TABLES.items() for row in table.rows]


@pytest.mark.parametrize(("pollutant", "row"), _TH_ROWS)
def test_thai_boundaries(pollutant: str, row: tuple[float, float, int, int]) -> None:
    table = TH_TABLES[pollutant]
    c_lo, c_hi, i_lo, i_hi = row
    assert sub_index(table, c_lo, extrapolate=True) == i_lo
    assert sub_index(table, c_hi, extrapolate=True) == i_hi


@pytest.mark.parametrize(("pollutant", "row"), _US_ROWS + [("o3_1h", r) for r in US_O3_1H.rows])
def test_us_boundaries(pollutant: str, row: tuple[float, float, int, int]) -> None:
    table = US_O3_1H if pollutant == "o3_1h" else US_TABLES[pollutant]
    c_lo, c_hi, i_lo, i_hi = row
    assert sub_index(table, c_lo, extrapolate=False) == i_lo
    assert sub_index(table, c_hi, extrapolate=False) == i_hi


def test_domain_table_values() -> None:
    # DOMAIN.md: PM2.5 37.5 is the top of "moderate" (100); 75.1 starts 201+.
    assert sub_index(TH_TABLES["pm2_5"], 37.5, extrapolate=True) == 100
    assert sub_index(TH_TABLES["pm2_5"], 37.6, extrapolate=True) == 101
    assert sub_index(TH_TABLES["pm2_5"], 75.1, extrapolate=True) == 201
    # Above 200: the 101-200 line continues (documented decision).
    assert sub_index(TH_TABLES["pm2_5"], 150.0, extrapolate=True) == math.floor(
        99 / 37.4 * (150.0 - 37.6) + 101 + 0.5
    )
    # EPA 2024: PM2.5 9.0 -> 50, 9.1 -> 51; truncation, not rounding: 9.09 -> 9.0.
    assert sub_index(US_TABLES["pm2_5"], 9.09, extrapolate=False) == 50
    assert sub_index(US_TABLES["pm2_5"], 325.5, extrapolate=False) == 500


def test_truncate() -> None:
    assert truncate(9.1, 1) == 9.1
    assert truncate(35.49, 1) == 35.4
    assert truncate(54.9, 0) == 54.0


def test_thai_result() -> None:
    result = thai_aqi(Concentrations(pm2_5_24h=80.0, pm10_24h=60, o3_8h=20, co_8h=1.0))
    assert result is not None
    assert (result.scale, result.dominant, result.band, result.colour_name) == (
        "th_pcd", "pm2_5", "affects health", "red",
    )  # fmt: skip
    assert result.index == result.sub_indices["pm2_5"] > 200
    assert set(result.sub_indices) == {"pm2_5", "pm10", "o3", "co"}
    assert thai_aqi(Concentrations()) is None


@pytest.mark.parametrize(
    ("pm25", "band", "colour"),
    [(5, "very good", "blue"), (20, "good", "green"), (30, "moderate", "yellow"),
     (50, "starting to affect health", "orange"), (90, "affects health", "red")],
)  # fmt: skip
def test_thai_bands(pm25: float, band: str, colour: str) -> None:
    result = thai_aqi(Concentrations(pm2_5_24h=pm25))
    assert result is not None
    assert (result.band, result.colour_name) == (band, colour)


def test_us_result_and_bands() -> None:
    result = us_aqi(Concentrations(pm2_5_24h=40.0, no2_1h=20, so2_1h=10))
    assert result is not None
    assert (result.index, result.band, result.colour_hex, result.dominant) == (
        math.floor((150 - 101) / (55.4 - 35.5) * (40.0 - 35.5) + 101 + 0.5),
        "unhealthy for sensitive groups",
        "#FF7E00",
        "pm2_5",
    )
    hazardous = us_aqi(Concentrations(pm10_24h=700))
    assert hazardous is not None
    assert (hazardous.index, hazardous.band) == (500, "hazardous")


def test_us_ozone_rules() -> None:
    only_8h = us_aqi(Concentrations(o3_8h=60))
    assert only_8h is not None and only_8h.index == sub_index(
        US_TABLES["o3"], 60, extrapolate=False
    )
    high_1h = us_aqi(Concentrations(o3_8h=60, o3_1h=170))
    assert high_1h is not None and high_1h.index == sub_index(US_O3_1H, 170, extrapolate=False)
    low_1h = us_aqi(Concentrations(o3_8h=60, o3_1h=100))
    assert low_1h is not None and low_1h.index == only_8h.index
    beyond = us_aqi(Concentrations(o3_8h=250))
    assert beyond is not None and beyond.index == 300


def test_tie_goes_to_first_pollutant_and_negative_is_zero() -> None:
    result = us_aqi(Concentrations(pm2_5_24h=0.0, co_8h=-1.0))
    assert result is not None
    assert (result.index, result.dominant, result.sub_indices["co"]) == (0, "pm2_5", 0)
    with pytest.raises(ValueError, match="NaN"):
        us_aqi(Concentrations(pm10_24h=math.nan))


@given(st.floats(min_value=0, max_value=2000, allow_nan=False))
def test_indices_are_monotonic(c: float) -> None:
    for table in (*TH_TABLES.values(), *US_TABLES.values()):
        lower = sub_index(table, c, extrapolate=True)
        assert sub_index(table, c + 1.0, extrapolate=True) >= lower
