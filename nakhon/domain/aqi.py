"""Air quality indices: Thailand PCD AQI and US EPA AQI, as pure functions.

Inputs are concentrations already averaged by the caller over each pollutant's
own period (:class:`Concentrations` says which), in Nakhon's canonical units:
PM µg/m³, O3/NO2/SO2 ppb, CO ppm. Each pollutant's sub-index is

    I = (I_hi − I_lo) / (C_hi − C_lo) × (C − C_lo) + I_lo

on the breakpoint row containing C, after C is truncated to the precision of
the table; the index is the highest sub-index, and its pollutant is dominant.
Negative concentrations (sensor noise around zero) count as zero.

Thailand (PCD; DOMAIN.md table, PM2.5 row of 1 June 2023 after the 24-hour
standard of 37.5 µg/m³; bands confirmed by thaipbsworld.com "Thailand's new air
quality standard" and sutair.sut.ac.th/air/airQualityIndex): the published
201+ row has no upper breakpoint. Decision (not found in PCD material here):
above the 101–200 row the sub-index continues on that row's line
(extrapolated, uncapped, and at least 201), so 201+ values keep rising with
the concentration.

US EPA (40 CFR 58 Appendix G as revised in 2024: PM2.5 rows 9.0 / 35.4 / 55.4
/ 125.4 / 225.4 / 325.4 and one "hazardous" row 301–500): truncation per
Appendix G (O3 to 0.001 ppm, PM2.5 and CO to 0.1, PM10, NO2, SO2 to integers).
Decisions where the rule needs data we are not given:
- O3: the index is the larger of the 8-hour and (where given and ≥ 125 ppb)
  the 1-hour sub-index; an 8-hour value above 200 ppb with no 1-hour value is
  reported as 300 (the top of the 8-hour table).
- SO2: 1-hour values above 304 ppb are indexed on the 24-hour rows (305–604,
  605–1004), applied to the 1-hour value.
- Concentrations above the top row give 500 (EPA: "beyond the AQI").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

#: Tie order for the dominant pollutant.
POLLUTANTS = ("pm2_5", "pm10", "o3", "co", "no2", "so2")


@dataclass(frozen=True, slots=True)
class Concentrations:
    """Averaged concentrations, each over its own period, in canonical units."""

    pm2_5_24h: float | None = None  # µg/m³
    pm10_24h: float | None = None  # µg/m³
    o3_8h: float | None = None  # ppb
    o3_1h: float | None = None  # ppb (US EPA only)
    co_8h: float | None = None  # ppm
    no2_1h: float | None = None  # ppb
    so2_1h: float | None = None  # ppb


@dataclass(frozen=True, slots=True)
class Band:
    name: str
    colour_name: str
    colour_hex: str
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class AqiResult:
    scale: str
    index: int
    band: str
    colour_name: str
    colour_hex: str
    dominant: str
    sub_indices: Mapping[str, int]


Row = tuple[float, float, int, int]  # C_lo, C_hi, I_lo, I_hi


@dataclass(frozen=True, slots=True)
class _Table:
    rows: tuple[Row, ...]
    decimals: int


# --- Thailand PCD (DOMAIN.md) ------------------------------------------------

_TH_I = ((0, 25), (26, 50), (51, 100), (101, 200))


def _th(decimals: int, *highs: float) -> _Table:
    step = 10.0**-decimals
    lows = (0.0, *(round(h + step, decimals) for h in highs[:-1]))
    rows = tuple((lo, hi, i[0], i[1]) for lo, hi, i in zip(lows, highs, _TH_I, strict=True))
    return _Table(rows, decimals)


TH_TABLES: Mapping[str, _Table] = MappingProxyType(
    {
        "pm2_5": _th(1, 15.0, 25.0, 37.5, 75.0),
        "pm10": _th(0, 50, 80, 120, 180),
        "o3": _th(0, 35, 50, 70, 120),
        "co": _th(1, 4.4, 6.4, 9.0, 30.0),
        "no2": _th(0, 60, 106, 170, 340),
        "so2": _th(0, 100, 200, 300, 400),
    }
)
# Colours as Air4Thai shows them (not verified against a PCD document here).
TH_BANDS = (
    Band("very good", "blue", "#3BCCFF", 0, 25),
    Band("good", "green", "#92D050", 26, 50),
    Band("moderate", "yellow", "#FFFF00", 51, 100),
    Band("starting to affect health", "orange", "#FFA200", 101, 200),
    Band("affects health", "red", "#F04646", 201, 10**9),
)

# --- US EPA (40 CFR 58 App. G, 2024) ----------------------------------------

_US_I = ((0, 50), (51, 100), (101, 150), (151, 200), (201, 300), (301, 500))


def _us(decimals: int, *pairs: tuple[float, float]) -> _Table:
    rows = tuple((lo, hi, i[0], i[1]) for (lo, hi), i in zip(pairs, _US_I, strict=False))
    return _Table(rows, decimals)


US_TABLES: Mapping[str, _Table] = MappingProxyType(
    {
        "pm2_5": _us(1, (0.0, 9.0), (9.1, 35.4), (35.5, 55.4), (55.5, 125.4), (125.5, 225.4),
                     (225.5, 325.4)),
        "pm10": _us(0, (0, 54), (55, 154), (155, 254), (255, 354), (355, 424), (425, 604)),
        # O3 in ppb: Appendix G's ppm truncated to 0.001 is an integer ppb.
        "o3": _us(0, (0, 54), (55, 70), (71, 85), (86, 105), (106, 200)),
        "co": _us(1, (0.0, 4.4), (4.5, 9.4), (9.5, 12.4), (12.5, 15.4), (15.5, 30.4),
                  (30.5, 50.4)),
        "no2": _us(0, (0, 53), (54, 100), (101, 360), (361, 649), (650, 1249), (1250, 2049)),
        "so2": _us(0, (0, 35), (36, 75), (76, 185), (186, 304), (305, 604), (605, 1004)),
    }
)  # fmt: skip
#: 1-hour O3 rows (ppb), used from 125 ppb up.
US_O3_1H = _Table(((125, 164, 101, 150), (165, 204, 151, 200), (205, 404, 201, 300),
                   (405, 604, 301, 500)), 0)  # fmt: skip
US_BANDS = (
    Band("good", "green", "#00E400", 0, 50),
    Band("moderate", "yellow", "#FFFF00", 51, 100),
    Band("unhealthy for sensitive groups", "orange", "#FF7E00", 101, 150),
    Band("unhealthy", "red", "#FF0000", 151, 200),
    Band("very unhealthy", "purple", "#8F3F97", 201, 300),
    Band("hazardous", "maroon", "#7E0023", 301, 500),
)


def truncate(value: float, decimals: int) -> float:
    """Truncate (not round) to ``decimals`` places, immune to binary fractions (9.1 stays 9.1)."""
    scale = 10.0**decimals
    return math.floor(value * scale + 1e-6) / scale


def _interpolate(row: Row, c: float) -> int:
    c_lo, c_hi, i_lo, i_hi = row
    return math.floor((i_hi - i_lo) / (c_hi - c_lo) * (c - c_lo) + i_lo + 0.5)


def sub_index(table: _Table, concentration: float, *, extrapolate: bool) -> int:
    """One pollutant's sub-index on a table; past the top row, extrapolate or give 500."""
    if math.isnan(concentration):
        raise ValueError("concentration is NaN")
    c = truncate(max(concentration, 0.0), table.decimals)
    for row in table.rows:
        if c <= row[1]:
            return _interpolate(row, max(c, row[0]))
    if not extrapolate:
        return 500
    top = table.rows[-1]
    return max(top[3] + 1, _interpolate(top, c))


def _inputs(c: Concentrations) -> dict[str, float]:
    values = {"pm2_5": c.pm2_5_24h, "pm10": c.pm10_24h, "o3": c.o3_8h, "co": c.co_8h,
              "no2": c.no2_1h, "so2": c.so2_1h}  # fmt: skip
    return {name: value for name, value in values.items() if value is not None}


def _result(scale: str, subs: dict[str, int], bands: tuple[Band, ...]) -> AqiResult | None:
    if not subs:
        return None
    dominant = max(POLLUTANTS, key=lambda p: (subs.get(p, -1), -POLLUTANTS.index(p)))
    index = subs[dominant]
    band = next(b for b in bands if index <= b.high)
    return AqiResult(scale, index, band.name, band.colour_name, band.colour_hex, dominant,
                     MappingProxyType(subs))  # fmt: skip


def thai_aqi(concentrations: Concentrations) -> AqiResult | None:
    """Thailand PCD AQI; None when no pollutant is given."""
    subs = {
        name: sub_index(TH_TABLES[name], value, extrapolate=True)
        for name, value in _inputs(concentrations).items()
    }
    return _result("th_pcd", subs, TH_BANDS)


def us_aqi(concentrations: Concentrations) -> AqiResult | None:
    """US EPA AQI (2024 PM2.5 breakpoints); None when no pollutant is given."""
    subs = {
        name: sub_index(US_TABLES[name], value, extrapolate=False)
        for name, value in _inputs(concentrations).items()
        if name != "o3"
    }
    o3 = _us_o3(concentrations.o3_8h, concentrations.o3_1h)
    if o3 is not None:
        subs["o3"] = o3
    return _result("us_epa", subs, US_BANDS)


def _us_o3(eight_hour: float | None, one_hour: float | None) -> int | None:
    candidates: list[int] = []
    if eight_hour is not None:
        table = US_TABLES["o3"]
        over = truncate(max(eight_hour, 0.0), 0) > table.rows[-1][1]
        candidates.append(300 if over else sub_index(table, eight_hour, extrapolate=False))
    if one_hour is not None and truncate(one_hour, 0) >= US_O3_1H.rows[0][0]:
        candidates.append(sub_index(US_O3_1H, one_hour, extrapolate=False))
    return max(candidates) if candidates else None
