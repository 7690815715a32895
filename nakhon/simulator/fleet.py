"""Simulated sensors of Thai smart cities and the payloads they publish (pure).

Values follow the shapes of DOMAIN.md: PM2.5 highest in the north (Chiang Mai,
Lampang), a morning and evening traffic peak (07–09 and 16–19 local time),
warm humid days. Each kind speaks a different wire format, so a demo exercises
several codecs: air quality in SenML, noise in simple JSON, traffic as FIWARE
TrafficFlowObserved (keyValues), buses as vehicle positions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

BANGKOK_TZ_OFFSET = timedelta(hours=7)


@dataclass(frozen=True, slots=True)
class City:
    slug: str
    code: str
    lat: float
    lon: float
    #: Typical PM2.5 (µg/m³) of the season: the north burns in February–April.
    pm25_base: float


#: Approximate centres (DOMAIN.md).
CITIES = (
    City("khon_kaen", "kkc", 16.432, 102.824, 28.0),
    City("chiang_mai", "cnx", 18.788, 98.985, 45.0),
    City("phuket", "hkt", 7.880, 98.392, 12.0),
    City("rayong", "ryg", 12.681, 101.281, 22.0),
    City("lampang", "lpg", 18.289, 99.491, 40.0),
    City("bangkok", "bkk", 13.756, 100.502, 32.0),
)

KINDS = ("air", "air", "air", "noise", "traffic", "bus")


@dataclass(frozen=True, slots=True)
class SimSensor:
    sensor_id: str
    city: City
    kind: str
    lat: float
    lon: float
    phase: float

    @property
    def topic(self) -> str:
        fmt = {"air": "senml", "noise": "json", "traffic": "ngsi", "bus": "position"}[self.kind]
        return f"city/{self.city.slug}/{self.sensor_id}/{fmt}"


def build_fleet(count: int, cities: Sequence[City] = CITIES, seed: int = 7) -> list[SimSensor]:
    """``count`` sensors spread over ``cities``, the same fleet for the same seed."""
    rng = random.Random(seed)
    fleet = []
    for i in range(count):
        city = cities[i % len(cities)]
        kind = KINDS[(i // len(cities)) % len(KINDS)]
        fleet.append(
            SimSensor(
                sensor_id=f"sim-{city.code}-{kind}-{i:04d}",
                city=city,
                kind=kind,
                lat=city.lat + rng.uniform(-0.08, 0.08),
                lon=city.lon + rng.uniform(-0.08, 0.08),
                phase=rng.uniform(0, 2 * math.pi),
            )
        )
    return fleet


def _local_hour(now: datetime) -> float:
    local = now + BANGKOK_TZ_OFFSET
    return local.hour + local.minute / 60


def _traffic_factor(hour: float) -> float:
    """1.0 at the rush-hour peaks (08 and 17:30 local), ~0.1 at night."""
    morning = math.exp(-(((hour - 8.0) / 1.2) ** 2))
    evening = math.exp(-(((hour - 17.5) / 1.5) ** 2))
    day = 0.45 if 6 <= hour <= 22 else 0.1
    return max(morning, evening, day)


def payload(sensor: SimSensor, now: datetime, rng: random.Random) -> bytes:
    """What ``sensor`` publishes at ``now``."""
    hour = _local_hour(now)
    traffic = _traffic_factor(hour)
    ts = now.timestamp()
    if sensor.kind == "air":
        pm25 = max(
            0.5,
            sensor.city.pm25_base * (0.7 + 0.5 * traffic)
            + rng.gauss(0, 3)
            + 4 * math.sin(sensor.phase),
        )
        temp = 27 + 5 * math.sin((hour - 9) / 24 * 2 * math.pi) + rng.gauss(0, 0.4)
        return orjson.dumps(
            [
                {
                    "bn": f"{sensor.sensor_id}:",
                    "bt": ts,
                    "n": "pm2_5",
                    "u": "ug/m3",
                    "v": round(pm25, 1),
                },
                {"n": "pm10", "u": "ug/m3", "v": round(max(1.0, pm25 * 1.6 + rng.gauss(0, 2)), 1)},
                {"n": "temperature", "u": "Cel", "v": round(temp, 2)},
                {
                    "n": "humidity",
                    "u": "%RH",
                    "v": round(min(98, 75 - (temp - 27) * 3 + rng.gauss(0, 2)), 1),
                },
            ]
        )
    if sensor.kind == "noise":
        laeq = 52 + 18 * traffic + rng.gauss(0, 2)
        return orjson.dumps({"ts": ts, "noise_laeq": round(laeq, 1)})
    if sensor.kind == "traffic":
        return orjson.dumps(
            {
                "id": f"urn:ngsi-ld:TrafficFlowObserved:{sensor.sensor_id}",
                "type": "TrafficFlowObserved",
                "dateObserved": now.isoformat(),
                "intensity": max(0, round(120 * traffic + rng.gauss(0, 8))),
                "averageVehicleSpeed": round(max(5.0, 70 - 45 * traffic + rng.gauss(0, 4)), 1),
                "occupancy": round(min(1.0, 0.15 + 0.7 * traffic), 2),
            }
        )
    angle = sensor.phase + ts / 600
    return orjson.dumps(
        {
            "ts": ts,
            "lat": round(sensor.lat + 0.01 * math.sin(angle), 6),
            "lon": round(sensor.lon + 0.01 * math.cos(angle), 6),
            "speed": round(max(0.0, 30 * (1 - traffic) + rng.gauss(0, 3)), 1),
            "heading": round(math.degrees(angle) % 360, 1),
        }
    )


def faulty_payload(sensor: SimSensor, now: datetime, rng: random.Random) -> tuple[bytes, int]:
    """What real fleets also send now and then: a truncated payload, or a value out of
    range beside a good one. Returns the payload and how many good readings it holds."""
    ts = now.timestamp()
    if rng.random() < 0.5 or sensor.kind in ("traffic", "bus"):
        return payload(sensor, now, rng)[:17], 0
    if sensor.kind == "air":
        pack = [
            {"bt": ts, "n": "humidity", "u": "%RH", "v": 140.0},
            {"n": "temperature", "u": "Cel", "v": 29.5},
        ]
        return orjson.dumps(pack), 1
    return orjson.dumps({"ts": ts, "noise_laeq": 250.0, "battery": 87}), 1


def utcnow() -> datetime:
    return datetime.now(UTC)
