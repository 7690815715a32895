"""The metric catalogue: names, units, conversions and ranges."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nakhon.domain.catalogue import (
    METRICS,
    Linear,
    lookup_metric,
    unit_key,
    unknown_metric_name,
)


@pytest.mark.parametrize(
    ("name", "metric"),
    [
        ("pm25", "pm2_5"),
        ("PM2.5", "pm2_5"),
        ("pm2.5", "pm2_5"),
        ("pm2p5", "pm2_5"),
        ("pm2_5", "pm2_5"),
        ("PM1.0", "pm1"),
        ("pm1_0", "pm1"),
        ("PM10", "pm10"),
        ("pm10", "pm10"),
        ("relativeHumidity", "humidity"),
        ("relative_humidity_2", "humidity"),
        ("atmosphericPressure", "pressure"),
        ("barometric_pressure_3", "pressure"),
        ("LAeq", "noise_laeq"),
        ("LAS", "noise_laeq"),
        ("intensity", "vehicle_count"),
        ("averageVehicleSpeed", "vehicle_speed"),
        ("availableSpotNumber", "parking_free"),
        ("precipitation", "rainfall"),
        ("windSpeed", "wind_speed"),
        ("windDirection", "wind_direction"),
        ("temperature_1", "temperature"),
        ("Temperature", "temperature"),
        ("co2_3", "co2"),
        ("CO", "co"),
        ("NO2", "no2"),
        ("water_level", "water_level"),
        ("battery", "battery"),
    ],
)
def test_aliases_resolve(name: str, metric: str) -> None:
    found = lookup_metric(name)
    assert found is not None
    assert found.name == metric


@pytest.mark.parametrize("name", ["LAmax", "foo", "x", "", "pm", "analog_in_1"])
def test_unknown_names(name: str) -> None:
    assert lookup_metric(name) is None


def test_unknown_metric_name_is_marked_and_sanitized() -> None:
    assert unknown_metric_name("LAmax") == "x_lamax"
    assert unknown_metric_name("Soil Moisture (%)") == "x_soil_moisture"
    assert unknown_metric_name("!!!") == "x_unnamed"
    assert len(unknown_metric_name("a" * 500)) == 64


def test_canonical_names_resolve_to_themselves() -> None:
    for name, metric in METRICS.items():
        assert lookup_metric(name) is metric


@pytest.mark.parametrize(
    ("metric", "value", "unit", "expected"),
    [
        # µg/m³ = ppb × M / 24.45 (DOMAIN.md): 1 ppb O3 = 48.00 / 24.45 µg/m³.
        ("o3", 48.00 / 24.45, "µg/m³", 1.0),
        ("o3", 0.07, "ppm", 70.0),
        ("no2", 46.01 / 24.45 * 100, "ug/m3", 100.0),
        ("so2", 64.07 / 24.45, "GQ", 1.0),
        ("co", 28.01 / 24.45 * 9, "mg/m3", 9.0),
        ("co", 28.01 / 24.45 * 9, "GP", 9.0),
        ("co", 4400, "ppb", 4.4),
        ("co", 4400, "61", 4.4),
        ("co2", 420, "59", 420.0),
        ("pm2_5", 0.035, "mg/m3", 35.0),
        ("pm2_5", 35, "μg/m3", 35.0),
        ("temperature", 98.6, "°F", 37.0),
        ("temperature", 300.15, "K", 27.0),
        ("temperature", 27.0, "Cel", 27.0),
        ("temperature", 27.0, "CEL", 27.0),
        ("temperature", 27.0, "°C", 27.0),
        ("humidity", 55.0, "%RH", 55.0),
        ("pressure", 101325, "Pa", 1013.25),
        ("pressure", 101.325, "kPa", 1013.25),
        ("rainfall", 1.0, "inch", 25.4),
        ("water_level", 250, "cm", 2.5),
        ("water_level", 2500, "mm", 2.5),
        ("vehicle_speed", 10, "m/s", 36.0),
        ("vehicle_speed", 10, "mph", 16.09344),
        ("vehicle_speed", 10, "knots", 18.52),
        ("wind_speed", 36, "km/h", 10.0),
        ("wind_speed", 10, "KMH", 10 / 3.6),
        ("wind_speed", 1, "kn", 1.852 / 3.6),
        ("wind_speed", 1, "mph", 1.609344 / 3.6),
        ("noise_laeq", 6.5, "Bspl", 65.0),
        ("battery", 80, "%EL", 80.0),
        ("occupancy", 40, "P1", 40.0),
    ],
)
def test_conversions(metric: str, value: float, unit: str, expected: float) -> None:
    conversion = METRICS[metric].conversion(unit)
    assert conversion is not None
    assert math.isclose(conversion.to_canonical(value), expected, rel_tol=1e-9, abs_tol=1e-9)


def test_no_unit_means_canonical_unit() -> None:
    conversion = METRICS["pm2_5"].conversion(None)
    assert conversion is not None
    assert conversion.to_canonical(12.0) == 12.0


def test_foreign_unit_is_unknown() -> None:
    assert METRICS["temperature"].conversion("ppb") is None
    assert METRICS["pm2_5"].conversion("ppm") is None


def test_unit_key_spellings() -> None:
    assert unit_key("µg/m³") == unit_key("ug/m3") == unit_key(" UG/M^3 ")
    assert unit_key("°C") == "degc"


_ALL_CONVERSIONS = [
    (metric.name, unit, conversion)
    for metric in METRICS.values()
    for unit, conversion in metric.units.items()
]


@given(
    st.sampled_from(_ALL_CONVERSIONS),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)
def test_conversions_round_trip(entry: tuple[str, str, Linear], value: float) -> None:
    _, _, conversion = entry
    back = conversion.from_canonical(conversion.to_canonical(value))
    assert math.isclose(back, value, rel_tol=1e-9, abs_tol=1e-6)


def test_plausible_ranges_from_domain() -> None:
    assert METRICS["pm2_5"].is_plausible(1000)
    assert not METRICS["pm2_5"].is_plausible(1000.1)
    assert not METRICS["co2"].is_plausible(299)
    assert METRICS["temperature"].is_plausible(-40)
    assert not METRICS["temperature"].is_plausible(70.5)
    assert not METRICS["humidity"].is_plausible(-0.1)
