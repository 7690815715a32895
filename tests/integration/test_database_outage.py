"""A database outage longer than ``max_poll_interval_ms``, through the real services.

The processor of a namespace logs in to TimescaleDB as a role of the test's
own (a member of ``nakhon_writer``, so it has the writer's rights and no
more). The test takes the database away from that processor only: it makes
the role ``NOLOGIN`` and ends its sessions, for three times the processor's
``max_poll_interval_ms`` while readings keep being published, then lets it log
in again. The shared PostgreSQL, and every other service and test, run on.

The promise: the processor keeps its partitions (it polls on with them paused:
no rebalance, the same member of the group from start to end), ``/readyz``
says why it is not ready, and once the database is back every reading is
stored exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from psycopg.conninfo import make_conninfo

from nakhon.kafka_client import kafka_client_options
from tests.integration.conftest import PG_SOCKETS, PSQL, Stack
from tests.integration.pipeline_harness import (
    PipelineNamespace,
    Publisher,
    count_rows,
    owner_dsn,
    senml,
    settle,
    wait_for,
)
from tools.sandbox import Service

#: The processor's max_poll_interval_ms here (aiokafka's default is 300 s).
MAX_POLL_MS = 10_000
#: How long the database stays away: three times that.
OUTAGE_S = 3 * MAX_POLL_MS / 1000
READINGS = 3000
CHUNK = 100
#: What /readyz says while the database is away and the batch holds its partitions.
WHY_NOT_READY = re.compile(
    r"database unavailable \(retrying\) since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, partitions paused"
)


def _as_superuser(statement: str) -> None:
    """SQL as ``postgres`` through the local cluster's socket (peer), as ``make up`` does.

    Given on stdin: it may hold a password, which must not show on a command line.
    """
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(PSQL), "-X", "-q", "-v", "ON_ERROR_STOP=1",
         "-h", str(PG_SOCKETS.resolve()), "-U", "postgres", "-d", "postgres"],
        input=statement.encode(), check=True, cwd="/", capture_output=True,
    )  # fmt: skip


def _end_sessions(role: str) -> None:
    """End every session of ``role``, each waited for (up to 5 s) to be gone."""
    _as_superuser(
        f"SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = '{role}'"
    )


@dataclass(frozen=True)
class Login:
    role: str
    dsn: str = field(repr=False)  # a failing test prints its fixtures: not the password


@pytest.fixture
def own_login(stack: Stack) -> Iterator[Login]:
    """A login role of this test's own in ``nakhon_writer``, and its DSN; dropped at the end."""
    if os.geteuid() != 0 or not PG_SOCKETS.exists():
        pytest.skip("a role of the test's own needs the local stack's superuser socket (root)")
    role = f"t_{uuid.uuid4().hex[:10]}"
    password = secrets.token_hex(16)
    _as_superuser(f"CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE nakhon_writer")
    try:
        yield Login(role, make_conninfo(stack.writer_dsn, user=role, password=password))
    finally:
        _as_superuser(f"ALTER ROLE {role} NOLOGIN")
        _end_sessions(role)
        _as_superuser(f"DROP ROLE {role}")


@pytest.fixture
async def ns(stack: Stack) -> AsyncIterator[PipelineNamespace]:
    namespace = PipelineNamespace(batch_max_records=200)
    await namespace.prepare()
    yield namespace
    namespace.stop_all()


@pytest.fixture
def publisher(ns: PipelineNamespace) -> Iterator[Publisher]:
    pub = Publisher(ns.publisher_credentials)
    yield pub
    pub.close()


def _readyz(service: Service) -> tuple[int, str]:
    """/readyz's status and detail."""
    try:
        with urllib.request.urlopen(service.ready_url, timeout=2) as resp:
            status, body = int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    return status, str(json.loads(body)["detail"])


def _metric(service: Service, name: str) -> float:
    url = service.ready_url.replace("/readyz", "/metrics")
    with urllib.request.urlopen(url, timeout=2) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}")


async def _group_members(ns: PipelineNamespace) -> tuple[str, list[str]]:
    """The state of the namespace's consumer group and its members' ids, from Kafka."""
    admin = AIOKafkaAdminClient(**kafka_client_options(ns.kafka))
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([ns.name])
    finally:
        await admin.close()
    [group] = response.to_object()["groups"]
    return str(group["state"]), sorted(str(m["member_id"]) for m in group["members"])


def _stream(ns: PipelineNamespace, prefix: str) -> list[tuple[str, bytes]]:
    """:data:`READINGS` readings of 30 sensors, each with its own time."""
    base = 1_795_000_000
    return [
        (ns.topic("rayong", f"{prefix}{i % 30}", "senml"), senml("pm25", float(i % 400), base + i))
        for i in range(READINGS)
    ]


async def test_an_outage_longer_than_max_poll_interval_keeps_the_partitions_and_loses_nothing(
    ns: PipelineNamespace, publisher: Publisher, own_login: Login
) -> None:
    role = own_login.role
    await ns.gateway().start_and_wait()
    processor = ns.processor()
    processor.env |= {
        "NAKHON_DB_PROCESSOR_DSN": own_login.dsn,
        "NAKHON_KAFKA_MAX_POLL_INTERVAL_MS": str(MAX_POLL_MS),
    }
    await processor.start_and_wait()
    prefix = f"{ns.name}-o"
    messages = _stream(ns, prefix)
    chunks = [messages[i : i + CHUNK] for i in range(0, READINGS, CHUNK)]
    await asyncio.to_thread(publisher.publish_all, chunks.pop(0))
    await wait_for(lambda: count_rows(prefix) == CHUNK, 30, f"the first {CHUNK} rows")

    async def one_stable_member() -> bool:
        state, members = await _group_members(ns)
        return state == "Stable" and len(members) == 1

    await wait_for(one_stable_member, 30, "the consumer group stable with its one member")
    _, members_before = await _group_members(ns)

    # The database goes away, for this processor only.
    _as_superuser(f"ALTER ROLE {role} NOLOGIN")
    _end_sessions(role)
    away_at = time.monotonic()
    said: set[str] = set()
    while time.monotonic() - away_at < OUTAGE_S:
        if len(chunks) > READINGS // CHUNK // 2:  # half of the stream during the outage
            await asyncio.to_thread(publisher.publish_all, chunks.pop(0))
        status, detail = await asyncio.to_thread(_readyz, processor)
        if status != 200:
            said.add(detail)
        await asyncio.sleep(0.5)  # the pace of the stream and of the look at /readyz
    assert count_rows(prefix) == CHUNK, "a row was stored while the database was away"
    assert any(WHY_NOT_READY.fullmatch(d) for d in said), said
    assert not any("Error" in d or "Exception" in d for d in said), said
    assert _metric(processor, "nakhon_processor_partitions_paused") == 3  # all of raw's
    outage_seen = _metric(processor, "nakhon_processor_db_outage_seconds")
    assert outage_seen > 2 * MAX_POLL_MS / 1000

    _as_superuser(f"ALTER ROLE {role} LOGIN")  # the database is back
    outage_s = time.monotonic() - away_at
    assert outage_s >= OUTAGE_S
    for chunk in chunks:
        await asyncio.to_thread(publisher.publish_all, chunk)
    # The backoff between retries reaches 30 s: the batch may wait that long more.
    await settle(ns, publisher, {topic for topic, _ in messages}, timeout_s=120)

    with psycopg.connect(owner_dsn()) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (sensor_id, metric, time)) FROM readings"
            " WHERE sensor_id LIKE %s AND metric = 'pm2_5'",
            (prefix + "%",),
        ).fetchone()
    assert row == (READINGS, READINGS)
    assert await ns.all_dead_letters() == []  # the refused logins blamed no payload
    assert _readyz(processor) == (200, "consuming")
    assert _metric(processor, "nakhon_processor_partitions_paused") == 0
    assert _metric(processor, "nakhon_processor_db_outage_seconds") == 0
    # No rebalance: the same one member from start to end, joined once.
    assert await _group_members(ns) == ("Stable", members_before)
    log = processor.log_path.read_text(errors="replace")
    assert log.count("Joined group") == 1, f"the group rebalanced; see {processor.log_path}"
    assert "LeaveGroup" not in log
    assert "database write failed" in log or "database write blocked" in log
    assert processor.terminate() == 0
