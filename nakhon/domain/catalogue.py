"""The metric catalogue: what a device's words mean in canonical metrics and units.

A device says ``PM2.5`` in ``ug/m3``, ``relativeHumidity`` in ``%RH``, or
``temperature_1`` (Cayenne LPP) with no unit at all; the catalogue maps each to
one canonical metric (DOMAIN.md, "Canonical metrics"), converts the value to
that metric's unit, and knows the physically plausible range.

Matching is forgiving about case and punctuation (``pm25``, ``PM2.5``,
``pm2_5``, ``pm2p5`` are one metric) but keeps decimal points meaningful:
``PM1.0`` is ``pm1``, not ``pm10``.

Every conversion is linear (``canonical = value * scale + offset``), so each
one has an exact inverse and the tests can round-trip them. Units are matched
by a key that ignores case, spaces, ``^`` and the micro/degree/superscript
spellings, so ``µg/m³``, ``ug/m3`` and UN/CEFACT ``GQ`` are one unit.

Sources of the unit words:
- SenML units registry (RFC 8428 §12.1, https://www.iana.org/assignments/senml):
  ``Cel``, ``K``, ``Pa``, ``m``, ``m/s``, ``%RH``, ``%EL``, ``count``, ``rad``, ``Bspl``.
- UN/CEFACT Recommendation 20 common codes, as used in the ``unitCode`` of the
  Smart Data Models examples (e.g. smart-data-models/dataModel.Environment,
  AirQualityObserved/examples/example-normalized.jsonld: ``GQ`` µg/m³, ``GP``
  mg/m³, ``59`` ppm, ``CEL`` °C, ``KMH`` km/h, ``MMT`` mm, ``P1`` percent).
  ``61`` ppb, ``KEL``, ``FAH``, ``A97`` hPa, ``PAL``, ``KPA``, ``MBR``, ``MTS``,
  ``HM`` mph, ``KNT``, ``CMT``, ``MTR``, ``INH``, ``2N`` dB, ``DD`` degree and
  ``C62`` one are from the same recommendation (not seen in an example here).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

#: Molar volume of an ideal gas at 25 °C and 1 atm, L/mol (DOMAIN.md, gas conversion).
MOLAR_VOLUME_L = 24.45
#: Molar masses, g/mol (DOMAIN.md).
MOLAR_MASS = MappingProxyType({"o3": 48.00, "no2": 46.01, "so2": 64.07, "co": 28.01})


@dataclass(frozen=True, slots=True)
class Linear:
    """``canonical = value * scale + offset``."""

    scale: float
    offset: float = 0.0

    def to_canonical(self, value: float) -> float:
        return value * self.scale + self.offset

    def from_canonical(self, value: float) -> float:
        return (value - self.offset) / self.scale


IDENTITY = Linear(1.0)


@dataclass(frozen=True, slots=True)
class Metric:
    """One canonical metric: its name, unit, plausible range and accepted input units."""

    name: str
    unit: str
    low: float
    high: float
    #: Unit key (see :func:`unit_key`) -> conversion to :attr:`unit`.
    units: Mapping[str, Linear]

    def conversion(self, unit: str | None) -> Linear | None:
        """The conversion for a device's unit; None when this metric does not accept it.

        No unit at all means the canonical unit (a device that names no unit is
        taken at its word that it speaks ours).
        """
        if unit is None or unit == "":
            return IDENTITY
        return self.units.get(unit_key(unit))

    def is_plausible(self, value: float) -> bool:
        return self.low <= value <= self.high


# --- unit vocabulary ---------------------------------------------------------

_UNIT_SPELLINGS = (
    ("\u00b5", "u"),  # micro sign
    ("\u03bc", "u"),  # Greek mu
    ("\u00b3", "3"),
    ("\u00b2", "2"),
    ("\u00b0", "deg"),
    ("^", ""),
    (" ", ""),
)


@lru_cache(maxsize=4096)
def unit_key(unit: str) -> str:
    """A unit's matching key: ``µg/m³`` -> ``ug/m3``, ``°C`` -> ``degc``, ``GQ`` -> ``gq``."""
    key = unit.strip()
    for old, new in _UNIT_SPELLINGS:
        key = key.replace(old, new)
    return key.lower()


def _units(*groups: tuple[Iterable[str], Linear]) -> Mapping[str, Linear]:
    table: dict[str, Linear] = {}
    for words, conversion in groups:
        for word in words:
            table[unit_key(word)] = conversion
    return MappingProxyType(table)


UG_M3 = ("µg/m³", "ug/m3", "ugm3", "ug/m^3", "mcg/m3", "GQ")
MG_M3 = ("mg/m³", "mg/m3", "mgm3", "GP")
PPB = ("ppb", "61")
PPM = ("ppm", "59")
PERCENT = ("%", "percent", "pct", "P1")
COUNT = ("count", "C62", "1")


def _gas_ppb(metric: str) -> Mapping[str, Linear]:
    """A gas stored in ppb: µg/m³ = ppb × M / 24.45 (DOMAIN.md), so ppb = µg/m³ × 24.45 / M."""
    per_ug = MOLAR_VOLUME_L / MOLAR_MASS[metric]
    return _units(
        (PPB, IDENTITY),
        (PPM, Linear(1000.0)),
        (UG_M3, Linear(per_ug)),
        (MG_M3, Linear(per_ug * 1000.0)),
    )


def _gas_ppm(metric: str) -> Mapping[str, Linear]:
    """A gas stored in ppm: mg/m³ = ppm × M / 24.45 (DOMAIN.md), so ppm = mg/m³ × 24.45 / M."""
    per_mg = MOLAR_VOLUME_L / MOLAR_MASS[metric]
    return _units(
        (PPM, IDENTITY),
        (PPB, Linear(0.001)),
        (MG_M3, Linear(per_mg)),
        (UG_M3, Linear(per_mg / 1000.0)),
    )


_PARTICLES = _units((UG_M3, IDENTITY), (MG_M3, Linear(1000.0)))
_KMH_PER_MS = 3.6
_KMH_PER_MPH = 1.609344
_KMH_PER_KNOT = 1.852
_MS = ("m/s", "mps", "MTS")
_KMH = ("km/h", "kmh", "kph", "km/hr", "KMH")
_MPH = ("mph", "mi/h", "HM")
_KNOT = ("kn", "kt", "kts", "knot", "knots", "KNT")

_METRICS: tuple[Metric, ...] = (
    Metric("pm1", "µg/m³", 0, 1000, _PARTICLES),
    Metric("pm2_5", "µg/m³", 0, 1000, _PARTICLES),
    Metric("pm10", "µg/m³", 0, 2000, _PARTICLES),
    Metric("o3", "ppb", 0, 1000, _gas_ppb("o3")),
    Metric("no2", "ppb", 0, 2000, _gas_ppb("no2")),
    Metric("so2", "ppb", 0, 2000, _gas_ppb("so2")),
    Metric("co", "ppm", 0, 1000, _gas_ppm("co")),
    Metric("co2", "ppm", 300, 10000, _units((PPM, IDENTITY), (PPB, Linear(0.001)))),
    Metric(
        "temperature",
        "°C",
        -40,
        70,
        _units(
            (("Cel", "C", "°C", "degC", "celsius", "CEL"), IDENTITY),
            (("K", "kelvin", "KEL"), Linear(1.0, -273.15)),
            (("F", "°F", "degF", "fahrenheit", "FAH"), Linear(5 / 9, -32 * 5 / 9)),
        ),
    ),
    Metric("humidity", "%RH", 0, 100, _units((("%RH", "RH", *PERCENT), IDENTITY))),
    Metric(
        "pressure",
        "hPa",
        800,
        1100,
        _units(
            (("hPa", "mbar", "mb", "A97", "MBR"), IDENTITY),
            (("Pa", "PAL"), Linear(0.01)),
            (("kPa", "KPA"), Linear(10.0)),
        ),
    ),
    Metric(
        "rainfall",
        "mm",
        0,
        500,
        _units(
            (("mm", "MMT"), IDENTITY),
            (("cm", "CMT"), Linear(10.0)),
            (("m", "MTR"), Linear(1000.0)),
            (("in", "inch", "inches", "INH"), Linear(25.4)),
        ),
    ),
    Metric(
        "wind_speed",
        "m/s",
        0,
        75,
        _units(
            (_MS, IDENTITY),
            (_KMH, Linear(1 / _KMH_PER_MS)),
            (_MPH, Linear(_KMH_PER_MPH / _KMH_PER_MS)),
            (_KNOT, Linear(_KMH_PER_KNOT / _KMH_PER_MS)),
        ),
    ),
    Metric(
        "wind_direction",
        "degrees",
        0,
        360,
        _units(
            (("deg", "degree", "degrees", "°", "DD"), IDENTITY),
            (("rad", "C81"), Linear(180.0 / 3.141592653589793)),
        ),
    ),
    Metric(
        "noise_laeq",
        "dBA",
        20,
        140,
        # SenML "Bspl" is bel sound pressure level (RFC 8428 §12.1): 1 B = 10 dB.
        _units((("dBA", "dB(A)", "dB", "2N"), IDENTITY), (("Bspl",), Linear(10.0))),
    ),
    Metric(
        "water_level",
        "m",
        -10,
        50,
        _units(
            (("m", "MTR"), IDENTITY),
            (("cm", "CMT"), Linear(0.01)),
            (("mm", "MMT"), Linear(0.001)),
        ),
    ),
    Metric(
        "vehicle_count",
        "vehicles",
        0,
        100000,
        _units((("vehicles", "vehicle", "veh", *COUNT), IDENTITY)),
    ),
    Metric(
        "vehicle_speed",
        "km/h",
        0,
        250,
        _units(
            (_KMH, IDENTITY),
            (_MS, Linear(_KMH_PER_MS)),
            (_MPH, Linear(_KMH_PER_MPH)),
            (_KNOT, Linear(_KMH_PER_KNOT)),
        ),
    ),
    Metric("occupancy", "%", 0, 100, _units((PERCENT, IDENTITY))),
    Metric(
        "parking_free",
        "spaces",
        0,
        100000,
        _units((("spaces", "space", "spots", "spot", *COUNT), IDENTITY)),
    ),
    # SenML "%EL": remaining battery energy level in percent (RFC 8428 §12.1).
    Metric("battery", "%", 0, 100, _units((("%EL", *PERCENT), IDENTITY))),
    # Not in DOMAIN.md's table: the LoRaWAN radio link of the best gateway that
    # heard an uplink (TTS rx_metadata, ChirpStack rxInfo), for coverage checks.
    Metric("link_rssi", "dBm", -150, 20, _units((("dBm", "DBM"), IDENTITY))),
    Metric("link_snr", "dB", -40, 40, _units((("dB", "2N"), IDENTITY))),
)

#: Canonical metric name -> its definition.
METRICS: Mapping[str, Metric] = MappingProxyType({m.name: m for m in _METRICS})

# Name keys (see name_key) of the words devices and data models use for each metric.
_ALIASES: Mapping[str, tuple[str, ...]] = {
    "pm1": ("pm1", "pm1p0", "pm01"),
    "pm2_5": ("pm2p5", "pm25"),
    "pm10": ("pm10", "pm10p0"),
    "o3": ("o3", "ozone"),
    "no2": ("no2", "nitrogendioxide"),
    "so2": ("so2", "sulfurdioxide", "sulphurdioxide"),
    "co": ("co", "carbonmonoxide"),
    "co2": ("co2", "carbondioxide"),
    # temperatureSensor / humiditySensor / barometer: CayenneLPP decoders that
    # nest by channel ({"temperatureSensor": {"1": 27.5}}), flattened by the codec.
    "temperature": (
        "temperature",
        "temp",
        "airtemperature",
        "ambienttemperature",
        "temperaturesensor",
    ),
    # relativeHumidity: Smart Data Models WeatherObserved / AirQualityObserved;
    # relative_humidity: Cayenne LPP decoders.
    "humidity": ("humidity", "relativehumidity", "rh", "hum", "humiditysensor"),
    # atmosphericPressure: WeatherObserved; barometric_pressure: Cayenne LPP.
    "pressure": (
        "pressure",
        "atmosphericpressure",
        "barometricpressure",
        "airpressure",
        "barometer",
    ),
    "rainfall": ("rainfall", "precipitation", "rain"),
    "wind_speed": ("windspeed",),
    "wind_direction": ("winddirection", "winddir"),
    # LAeq / LAS: NoiseLevelObserved (DOMAIN.md lists LAS as an alias).
    "noise_laeq": ("noiselaeq", "laeq", "las", "noise", "noiselevel"),
    "water_level": ("waterlevel", "riverlevel"),
    # intensity: TrafficFlowObserved.
    "vehicle_count": ("vehiclecount", "intensity"),
    # averageVehicleSpeed: TrafficFlowObserved.
    "vehicle_speed": ("vehiclespeed", "averagevehiclespeed", "avgvehiclespeed"),
    "occupancy": ("occupancy",),
    # availableSpotNumber: ParkingSpot / OffStreetParking.
    "parking_free": ("parkingfree", "availablespotnumber", "freespaces", "availablespots"),
    "battery": ("battery", "batterylevel", "bat", "batt"),
    "link_rssi": ("linkrssi", "rssi"),
    "link_snr": ("linksnr", "snr"),
}

_BY_KEY: Mapping[str, Metric] = MappingProxyType(
    {alias: METRICS[name] for name, aliases in _ALIASES.items() for alias in aliases}
)

_DECIMAL_POINT = re.compile(r"(?<=\d)[._,p](?=\d)")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_CHANNEL_SUFFIX = re.compile(r"^(.+?)[_\-. ]?\d{1,3}$")
_NOT_METRIC_CHAR = re.compile(r"[^a-z0-9_]+")
_MAX_METRIC_LEN = 64


def name_key(name: str) -> str:
    """A metric name's matching key: case and punctuation dropped, decimal points kept as ``p``.

    ``PM2.5`` and ``pm2_5`` -> ``pm2p5``; ``relativeHumidity`` -> ``relativehumidity``.
    """
    return _NOT_ALNUM.sub("", _DECIMAL_POINT.sub("p", name.lower()))


@lru_cache(maxsize=8192)
def lookup_metric(name: str) -> Metric | None:
    """The canonical metric a device's name means, or None when the catalogue does not know it.

    A Cayenne-LPP-style channel suffix (``temperature_1``, ``co2_3``) is dropped
    when the name itself is not known.
    """
    metric = _BY_KEY.get(name_key(name))
    if metric is None:
        channel = _CHANNEL_SUFFIX.match(name.strip())
        if channel is not None:
            metric = _BY_KEY.get(name_key(channel.group(1)))
    return metric


@lru_cache(maxsize=8192)
def unknown_metric_name(name: str) -> str:
    """The marked name under which an unknown metric is kept: ``Foo Bar`` -> ``x_foo_bar``."""
    body = _NOT_METRIC_CHAR.sub("_", name.lower()).strip("_") or "unnamed"
    return ("x_" + body)[:_MAX_METRIC_LEN]
