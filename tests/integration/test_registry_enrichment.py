"""The sensor registry at work in the pipeline: LoRaWAN cities and strict mode."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from tests.integration.conftest import Stack
from tests.integration.pipeline_harness import (
    PipelineNamespace,
    Publisher,
    count_rows,
    owner_dsn,
    wait_until,
)

NOW = datetime.now(UTC).replace(microsecond=0)


def uplink(device_id: str, pm25: float) -> bytes:
    """A minimal The Things Stack v3 uplink with a decoded payload."""
    return json.dumps(
        {
            "end_device_ids": {"device_id": device_id, "dev_eui": "70B3D57ED0000009"},
            "received_at": NOW.isoformat(),
            "uplink_message": {
                "f_port": 2,
                "decoded_payload": {"pm25": pm25},
                "received_at": NOW.isoformat(),
            },
        }
    ).encode()


@pytest.fixture
async def strict_ns(stack: Stack) -> AsyncIterator[PipelineNamespace]:
    namespace = PipelineNamespace()
    await namespace.prepare()
    with psycopg.connect(owner_dsn()) as conn:
        conn.execute(
            "INSERT INTO sensors (sensor_id, city, kind, source) VALUES (%s, 'khon_kaen',"
            " 'air_quality', 'registry')",
            (f"{namespace.name}-known",),
        )
    yield namespace
    namespace.stop_all()
    with psycopg.connect(owner_dsn()) as conn:
        conn.execute("DELETE FROM readings WHERE sensor_id LIKE %s", (namespace.name + "%",))
        conn.execute("DELETE FROM sensors WHERE sensor_id LIKE %s", (namespace.name + "%",))


@pytest.fixture
def publisher(strict_ns: PipelineNamespace) -> Iterator[Publisher]:
    pub = Publisher(strict_ns.publisher_credentials)
    yield pub
    pub.close()


async def test_strict_mode_stores_registered_sensors_with_their_city_and_rejects_others(
    strict_ns: PipelineNamespace, publisher: Publisher
) -> None:
    ns = strict_ns
    ns.gateway().start()
    processor = ns.processor()
    processor.env["NAKHON_PROCESSOR_STRICT_SENSORS"] = "true"
    processor.start()
    known, stranger = f"{ns.name}-known", f"{ns.name}-stranger"
    topic = f"{ns.root}-ttn/v3/aq-app@ttn/devices/{{}}/up"
    publisher.publish_all(
        [
            (topic.format(stranger), uplink(stranger, 30.0)),
            (topic.format(known), uplink(known, 12.0)),
        ]
    )
    wait_until(lambda: count_rows(known) == 1, 30, "the registered device's row")
    with psycopg.connect(owner_dsn()) as conn:
        row = conn.execute(
            "SELECT metric, value, city FROM readings WHERE sensor_id = %s", (known,)
        ).fetchone()
        registered = conn.execute(
            "SELECT count(*) FROM sensors WHERE sensor_id = %s", (stranger,)
        ).fetchone()
    assert row == ("pm2_5", 12.0, "khon_kaen")  # the registry's city, not "lorawan"
    assert count_rows(stranger) == 0
    assert registered == (0,)  # strict mode registers nobody
    letters = await ns.dead_letters(expect=1)
    assert [(x["reason"], x["stage"]) for x in letters] == [("unknown_sensor", "enrich")]
    assert letters[0]["value"] == uplink(stranger, 30.0)
