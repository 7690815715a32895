"""The simulated fleet publishes what the pipeline accepts, and counts it right."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from nakhon.config import DEFAULT_ROUTES
from nakhon.domain.records import RawRecord
from nakhon.processors.enrich import SensorDirectory
from nakhon.processors.normalize import NormalizePolicy
from nakhon.processors.pipeline import Pipeline
from nakhon.processors.routing import Router
from nakhon.simulator.command import READINGS_PER_MESSAGE
from nakhon.simulator.fleet import CITIES, build_fleet, faulty_payload, payload

# The simulator's cities are registered (migration 0003 seeds them).
PIPELINE = Pipeline(
    Router(DEFAULT_ROUTES, "unknown"),
    NormalizePolicy(),
    SensorDirectory({}, [city.slug for city in CITIES]),
)
START = datetime(2026, 3, 15, 0, 0, tzinfo=UTC)  # burning season, through a whole day


def test_every_normal_payload_is_accepted_whole() -> None:
    rng = random.Random(1)
    fleet = build_fleet(120)
    for hour in range(0, 24, 3):
        now = START + timedelta(hours=hour)
        for sensor in fleet:
            out = PIPELINE.process(RawRecord(sensor.topic, payload(sensor, now, rng), now))
            assert out.rejections == (), (sensor.sensor_id, out.rejections)
            assert len(out.readings) == READINGS_PER_MESSAGE[sensor.kind]
            assert len(out.positions) == (1 if sensor.kind == "bus" else 0)
            assert {r.city for r in out.readings} <= {sensor.city.slug}


def test_faulty_payloads_are_rejected_and_their_good_values_counted() -> None:
    rng = random.Random(2)
    now = START
    for sensor in build_fleet(60):
        body, good = faulty_payload(sensor, now, rng)
        out = PIPELINE.process(RawRecord(sensor.topic, body, now))
        assert out.rejections, sensor.sensor_id
        assert len(out.readings) == good
