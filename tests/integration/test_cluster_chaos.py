"""The delivery guarantee on a replicated Kafka with several gateways and processors.

Each test gets the rig of ``make chaos``'s cluster rows (:func:`tools.chaos.rows.open_cluster_rig`):
a three-node KRaft cluster of its own (:class:`~tools.sandbox.IsolatedKafkaCluster`;
the namespace's topics with replication factor 3 and ``min.insync.replicas`` 2),
two gateways sharing the stream through an MQTT shared subscription on the
stack's Mosquitto, three processors in one consumer group. One component is
killed with SIGKILL mid-stream; every reading must be stored exactly once, none
dead-lettered. The stack's Kafka, Mosquitto sessions and services are not touched.

No sleeps: the tests wait on facts (rows stored, every PUBACK back, a node
registered again, the consumer group stable with so many members), and count
after :func:`settle` (markers behind the stream, then zero consumer lag).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import paho.mqtt.client as mqtt
import psycopg
import pytest
from aiokafka.errors import KafkaError

from tests.integration.conftest import Stack
from tests.integration.pipeline_harness import (
    Publisher,
    count_rows,
    owner_dsn,
    pm25_stream,
    settle,
    wait_for,
)
from tools.chaos.rows import Rig, close_rig, open_cluster_rig
from tools.sandbox import SandboxError

#: Readings a test publishes: single-reading SenML messages from 50 sensors.
N = 2000


@pytest.fixture
async def rig(stack: Stack) -> AsyncIterator[Rig]:
    # Small batches: a processor killed mid-stream is likely to be mid-batch.
    cluster_rig = await open_cluster_rig(batch_max_records=200)
    try:
        yield cluster_rig
    finally:
        close_rig(cluster_rig)


@pytest.fixture
def publisher(rig: Rig) -> Iterator[Publisher]:
    pub = Publisher(rig.ns.publisher_credentials)
    yield pub
    pub.close()


def _rows_and_distinct(prefix: str) -> tuple[int, int]:
    with psycopg.connect(owner_dsn()) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (sensor_id, metric, time)) FROM readings"
            " WHERE sensor_id LIKE %s AND metric = 'pm2_5'",
            (prefix + "%",),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def _all_acknowledged(infos: list[mqtt.MQTTMessageInfo], timeout_s: float = 180) -> None:
    """Every message's PUBACK is back: each is in Kafka (the gateways ack after Kafka's ack)."""
    await wait_for(
        lambda: all(info.is_published() for info in infos),
        timeout_s,
        f"PUBACKs for {len(infos)} messages",
    )


async def _exactly_once(
    rig: Rig, publisher: Publisher, prefix: str, messages: list[tuple[str, bytes]]
) -> None:
    await settle(rig.ns, publisher, {topic for topic, _ in messages}, timeout_s=180)
    assert _rows_and_distinct(prefix) == (N, N)
    assert await rig.ns.all_dead_letters() == []


async def test_the_kafka_node_leading_partition_0_killed_mid_stream_loses_and_duplicates_nothing(
    rig: Rig, publisher: Publisher
) -> None:
    cluster, ns = rig.cluster, rig.ns
    assert cluster is not None
    prefix = f"{ns.name}-k"
    messages = pm25_stream(ns, prefix, N)
    publisher.publish_all(messages[:500])
    await wait_for(lambda: count_rows(prefix) > 0, 60, "the first rows")
    infos = [publisher.publish(t, p) for t, p in messages[500:1200]]
    victim = await cluster.leader(ns.raw_topic, 0)
    await cluster.kill(victim)  # mid-stream: records in flight to it, unacknowledged
    infos += [publisher.publish(t, p) for t, p in messages[1200:1600]]  # one node down
    # Two nodes of three: the quorum and min.insync.replicas=2 still hold, so
    # partition 0 gets a new leader and the flow goes on before the node is back.
    await wait_for(
        lambda: _new_leader(rig, victim), 60, f"a leader other than node {victim} for partition 0"
    )
    await cluster.restart(victim)
    infos += [publisher.publish(t, p) for t, p in messages[1600:]]
    await _all_acknowledged(infos)
    await _exactly_once(rig, publisher, prefix, messages)


async def _new_leader(rig: Rig, old: int) -> bool:
    assert rig.cluster is not None
    try:
        return await rig.cluster.leader(rig.ns.raw_topic, 0) != old
    except (SandboxError, KafkaError):  # no leader yet, or a metadata request timed out
        return False


async def test_one_of_three_processors_killed_mid_stream_the_others_take_over(
    rig: Rig, publisher: Publisher
) -> None:
    ns = rig.ns
    prefix = f"{ns.name}-p"
    messages = pm25_stream(ns, prefix, N)
    publisher.publish_all(messages[:600])
    await wait_for(lambda: count_rows(prefix) >= 200, 60, "some batches stored")
    rig.processors[-1].kill()  # between a DB commit and its offset commit, or mid-write
    publisher.publish_all(messages[600:])  # its partition's share waits for a new owner
    # The killed member's session expires, the group rebalances, and the two
    # left take its partition over: every reading is stored without a restart.
    await wait_for(lambda: ns.group_stable(2), 90, "the group stable with the 2 processors left")
    await wait_for(lambda: count_rows(prefix) >= N, 120, "every row, stored by the two left")
    rig.processors[-1] = ns.processor()
    await rig.processors[-1].start_and_wait(120)
    await wait_for(lambda: ns.group_stable(3), 90, "the group stable with a new third processor")
    await _exactly_once(rig, publisher, prefix, messages)
