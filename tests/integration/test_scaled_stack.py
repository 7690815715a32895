"""The local stack scaled out: three Kafka brokers, two gateways, three processors.

Runs on such a stack only (``NAKHON_KAFKA_BROKERS=3 NAKHON_GATEWAYS=2
NAKHON_PROCESSORS=3 make up``; ``.ci/run`` brings it up after ``make test``
and runs this module); skipped on a stack of one of each. Through the stack's
own services, as devices reach them: a fleet's readings are shared by both
gateways and all three processors, one Kafka node is killed with SIGKILL
mid-stream and brought back by ``deploy/local/stack.sh up`` (which starts that
node only), and every reading is stored once.
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from nakhon.env_file import read_env_file
from nakhon.identity.provision import Credentials
from nakhon.local_stack import LOCAL_STACK
from tests.integration.conftest import REPO, Stack
from tests.integration.pipeline_harness import Publisher, owner_dsn, run_nakhon, senml, wait_for

STATE = Path(os.environ.get("NAKHON_STATE_DIR", REPO / ".nakhon"))
SCALE = read_env_file(STATE / "scale.env") if (STATE / "scale.env").is_file() else {}
BROKERS = int(SCALE.get("NAKHON_KAFKA_BROKERS", "1"))
GATEWAYS = int(SCALE.get("NAKHON_GATEWAYS", "1"))
PROCESSORS = int(SCALE.get("NAKHON_PROCESSORS", "1"))

pytestmark = pytest.mark.skipif(
    BROKERS < 3 or GATEWAYS < 2 or PROCESSORS < 3,
    reason=(
        "needs a scaled stack: NAKHON_KAFKA_BROKERS=3 NAKHON_GATEWAYS=2 NAKHON_PROCESSORS=3 "
        "make up (.ci/run runs this module on one)"
    ),
)

CITY = "khon_kaen"
DEVICES = 18
READINGS_PER_DEVICE = 100
BASE_TIME = 1_795_200_000


def counter(port: int, name: str) -> float:
    """The sum of a counter's samples at a service's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        lines = resp.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name))


def gateway_ports() -> list[int]:
    return [LOCAL_STACK.gateway_metrics_port + 10 * i for i in range(GATEWAYS)]


def processor_ports() -> list[int]:
    return [LOCAL_STACK.processor_metrics_port + 10 * i for i in range(PROCESSORS)]


def nakhon(*args: str) -> subprocess.CompletedProcess[str]:
    return run_nakhon(*args)


@pytest.fixture
def fleet(stack: Stack, tmp_path: Path) -> Iterator[list[Credentials]]:
    """DEVICES devices in one city, made with ``nakhon devices import``."""
    prefix = f"scaled-{uuid.uuid4().hex[:8]}"
    sensors = [f"{prefix}-{i}" for i in range(DEVICES)]
    table = tmp_path / "fleet.csv"
    table.write_text("sensor_id,city\n" + "".join(f"{s},{CITY}\n" for s in sensors))
    out = tmp_path / "fleet.credentials.csv"
    done = nakhon("devices", "import", str(table), "--credentials-out", str(out))
    assert done.returncode == 0, done.stderr
    with out.open(newline="") as f:
        yield [Credentials(r["username"], r["password"], "device") for r in csv.DictReader(f)]
    nakhon("devices", "revoke", *sensors)
    with psycopg.connect(owner_dsn()) as conn:
        conn.execute("DELETE FROM readings WHERE sensor_id LIKE %s", (prefix + "%",))
        conn.execute("DELETE FROM sensors WHERE sensor_id LIKE %s", (prefix + "%",))


def _publish(fleet: list[Credentials], readings: range) -> None:
    publishers = [Publisher(creds) for creds in fleet]
    try:
        infos = [
            pub.publish(f"city/{CITY}/{creds.username}/senml", senml("pm25", i, BASE_TIME + i))
            for i in readings
            for pub, creds in zip(publishers, fleet, strict=True)
        ]
        for info in infos:
            info.wait_for_publish(60)
            assert info.is_published()
    finally:
        for pub in publishers:
            pub.close()


def _stored(prefix: str) -> int:
    with psycopg.connect(owner_dsn()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings WHERE sensor_id LIKE %s AND metric = 'pm2_5'",
            (prefix + "%",),
        ).fetchone()
    return int(row[0]) if row else 0


async def test_two_gateways_and_three_processors_store_every_reading_once_through_a_broker_kill(
    fleet: list[Credentials],
) -> None:
    prefix = fleet[0].username.rsplit("-", 1)[0]
    forwarded = [counter(p, "nakhon_gateway_messages_acknowledged_total") for p in gateway_ports()]
    stored = [counter(p, "nakhon_processor_readings_stored_total") for p in processor_ports()]
    half = READINGS_PER_DEVICE // 2

    await asyncio.to_thread(_publish, fleet, range(half))
    node = STATE / "run" / "kafka-2.pid"
    os.kill(int(node.read_text().split()[0]), signal.SIGKILL)
    await asyncio.to_thread(_publish, fleet, range(half, READINGS_PER_DEVICE))
    up = await asyncio.to_thread(
        subprocess.run,
        ["deploy/local/stack.sh", "up"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    assert "starting Kafka node(s) 2 of 3" in up.stdout

    expected = DEVICES * READINGS_PER_DEVICE
    await wait_for(lambda: _stored(prefix) >= expected, 180, f"{expected} readings stored")
    assert _stored(prefix) == expected
    # Both gateways and every processor took a share.
    for port, before in zip(gateway_ports(), forwarded, strict=True):
        assert counter(port, "nakhon_gateway_messages_acknowledged_total") > before, port
    for port, before in zip(processor_ports(), stored, strict=True):
        assert counter(port, "nakhon_processor_readings_stored_total") > before, port
