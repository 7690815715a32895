"""The disturbances of ``make chaos``: which component is hurt, how, and on whose stack.

Each row runs in a rig of its own: a namespace (topics, consumer group,
gateway and processor of its own, :mod:`tools.sandbox`) on the stack's
Mosquitto and Kafka, except where the row hurts one of those: the Mosquitto
rows use a broker of the run's own configured as the stack's
(:class:`~tools.private_broker.PrivateBroker`), the Kafka row a Kafka of the
run's own (:class:`~tools.sandbox.IsolatedKafka`). PostgreSQL has no such
twin: its row stops the stack's, which every other service and test uses
meanwhile, so it runs only when asked for (``--postgres``).

The ``cluster`` rows (group ``cluster``) run on a rig of several of each: a
three-node KRaft cluster of the run's own
(:class:`~tools.sandbox.IsolatedKafkaCluster`; the namespace's topics with
replication factor 3 and ``min.insync.replicas`` 2), two gateways and three
processors. The gateways, each with its own login and client id, split the
stream through an MQTT shared subscription group on the stack's Mosquitto;
the processors, one consumer group, split the raw topic's partitions. A
shared subscription is safe here because these rows never restart Mosquitto:
Mosquitto 2.0 does not persist shared subscriptions across its own restart
(a gateway's persistent session comes back without its ``$share/...``
subscription), which is why the single-gateway default subscribes to its
filters themselves. A killed gateway's session keeps its share of the
messages queued meanwhile (Mosquitto deals a shared subscription's messages
to every session in turn, connected or not); its successor, with the same
login and client id, takes them over, as a supervisor's restart would.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tools.private_broker import PrivateBroker
from tools.sandbox import (
    REPO,
    IsolatedKafka,
    IsolatedKafkaCluster,
    PipelineNamespace,
    SandboxError,
    Service,
    relaunch_isolated_kafka,
    wait_for,
)

#: How long the PostgreSQL row keeps the database stopped.
POSTGRES_DOWN_S = 30.0
#: The stack's own start and stop of PostgreSQL (deploy/local/services/postgres.sh).
_STACK_POSTGRES = (
    'source deploy/local/lib.sh; for f in deploy/local/services/*.sh; do source "$f"; done; '
)


#: The cluster rows' rig: gateways sharing the stream, processors sharing the partitions.
CLUSTER_GATEWAYS = 2
CLUSTER_PROCESSORS = 3
#: How long a cluster row waits for a node it brought back to be in sync again (a note).
IN_SYNC_TIMEOUT_S = 120.0


@dataclass
class Rig:
    """One row's pipeline: its namespace, services, and the broker or Kafka of its own.

    ``gateways[i]`` runs with the namespace's gateway login ``i``.
    """

    ns: PipelineNamespace
    gateways: list[Service]
    processors: list[Service]
    broker: PrivateBroker | None = None
    kafka: IsolatedKafka | None = None
    cluster: IsolatedKafkaCluster | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def mqtt_port(self) -> int:
        return self.ns.mqtt_port

    @property
    def gateway(self) -> Service:
        return self.gateways[0]

    @property
    def processor(self) -> Service:
        return self.processors[0]


@dataclass(frozen=True)
class Disturbance:
    name: str
    title: str
    #: Hurts the component and brings it back; returns when it is back.
    hurt: Callable[[Rig], Awaitable[None]]
    private_broker: bool = False
    isolated_kafka: bool = False
    #: On the rig of several: a 3-node Kafka cluster, 2 gateways, 3 processors.
    cluster: bool = False
    #: Why the row is skipped unless asked for, and the flag that asks.
    opt_in: tuple[str, str] | None = None

    @property
    def group(self) -> str:
        """``cluster`` (the rig of several) or ``single`` (one of each)."""
        return "cluster" if self.cluster else "single"


async def _nothing(rig: Rig) -> None:
    return None


async def _kill_gateway(rig: Rig) -> None:
    """kill -9 the last gateway (the only one, or one of several); start its successor.

    The successor has the killed one's login and client id: it resumes the
    session, whose unacknowledged and queued messages the broker sends it.
    """
    login = len(rig.gateways) - 1
    rig.gateways[login].kill()
    rig.gateways[login] = rig.ns.gateway(login=login)
    await rig.gateways[login].start_and_wait()


async def _kill_processor(rig: Rig) -> None:
    """kill -9 the last processor; a new one joins the group (the others rebalance meanwhile)."""
    rig.processors[-1].kill()
    rig.processors[-1] = rig.ns.processor()
    await rig.processors[-1].start_and_wait()


async def _kill_kafka(rig: Rig) -> None:
    kafka = rig.kafka
    assert kafka is not None and kafka.proc is not None
    kafka.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(kafka.proc.wait, 30)
    await relaunch_isolated_kafka(kafka)


async def _kill_kafka_node(rig: Rig) -> None:
    """kill -9 one Kafka node that does not lead partition 0 of the raw topic; restart it."""
    cluster = rig.cluster
    assert cluster is not None
    leaders = await cluster.leaders(rig.ns.raw_topic)
    # The node leading the fewest raw partitions, partition 0's leader last.
    led = {
        n.node_id: sum(1 for lead in leaders.values() if lead == n.node_id) for n in cluster.nodes
    }
    victim = min(led, key=lambda n: (n == leaders.get(0), led[n], -n))
    await _kill_and_restart_node(rig, victim, leaders)


async def _kill_partition_leader(rig: Rig) -> None:
    """kill -9 the node that leads partition 0 of the raw topic (as clients see it); restart it."""
    cluster = rig.cluster
    assert cluster is not None
    victim = await cluster.leader(rig.ns.raw_topic, 0)
    await _kill_and_restart_node(rig, victim, await cluster.leaders(rig.ns.raw_topic))


async def _kill_and_restart_node(rig: Rig, node_id: int, leaders: dict[int, int]) -> None:
    cluster = rig.cluster
    assert cluster is not None
    led = sorted(p for p, lead in leaders.items() if lead == node_id)
    rig.notes.append(
        f"killed Kafka node {node_id} of {len(cluster.nodes)}, leader of raw partition(s)"
        f" {', '.join(map(str, led)) or 'none'}"
    )
    await cluster.kill(node_id)
    await cluster.restart(node_id)
    back = time.monotonic()
    topics = [rig.ns.raw_topic, rig.ns.readings_topic, rig.ns.deadletter_topic]
    try:
        await wait_for(lambda: cluster.in_sync(topics), IN_SYNC_TIMEOUT_S, "replicas in sync")
    except SandboxError:
        rig.notes.append(f"node {node_id} not back in sync {IN_SYNC_TIMEOUT_S:.0f} s after restart")
    else:
        rig.notes.append(
            f"node {node_id} back in every ISR {time.monotonic() - back:.1f} s after its restart"
        )


async def _stop_postgres(rig: Rig) -> None:
    await asyncio.to_thread(_stack_postgres, "postgres_stop")
    try:
        await asyncio.sleep(POSTGRES_DOWN_S)
    finally:
        await asyncio.to_thread(_stack_postgres, "postgres_start")


def _stack_postgres(function: str) -> None:
    subprocess.run(  # noqa: S603  (fixed command line: the stack's own functions)
        ["/bin/bash", "-c", _STACK_POSTGRES + function],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=180,
    )


async def _restart_broker(rig: Rig) -> None:
    assert rig.broker is not None
    await asyncio.to_thread(rig.broker.restart)


async def _kill_broker(rig: Rig) -> None:
    broker = rig.broker
    assert broker is not None
    await asyncio.to_thread(broker.kill)
    await asyncio.to_thread(broker.start)


ROWS = (
    Disturbance("none", "nothing hurt (the reference)", _nothing),
    Disturbance("gateway-kill", "gateway kill -9, restarted", _kill_gateway),
    Disturbance("processor-kill", "processor kill -9, restarted", _kill_processor),
    Disturbance(
        "kafka-kill", "Kafka kill -9, restarted (the run's own)", _kill_kafka, isolated_kafka=True
    ),
    Disturbance(
        "cluster-kafka-kill",
        "one Kafka node of 3 kill -9 (not partition 0's leader), restarted",
        _kill_kafka_node,
        cluster=True,
    ),
    Disturbance(
        "cluster-leader-kill",
        "the Kafka node leading raw partition 0 kill -9, restarted",
        _kill_partition_leader,
        cluster=True,
    ),
    Disturbance(
        "cluster-gateway-kill",
        "one gateway of 2 kill -9 (shared subscription), restarted",
        _kill_gateway,
        cluster=True,
    ),
    Disturbance(
        "cluster-processor-kill",
        "one processor of 3 kill -9 (rebalance), restarted",
        _kill_processor,
        cluster=True,
    ),
    Disturbance(
        "postgres-stop",
        f"PostgreSQL stopped {POSTGRES_DOWN_S:.0f} s (the stack's)",
        _stop_postgres,
        opt_in=(
            "stops the stack's PostgreSQL, which every other service and test uses meanwhile",
            "--postgres",
        ),
    ),
    Disturbance(
        "mosquitto-restart",
        "Mosquitto graceful restart, SIGTERM (the run's own)",
        _restart_broker,
        private_broker=True,
    ),
    Disturbance(
        "mosquitto-kill",
        "Mosquitto kill -9, restarted (the run's own)",
        _kill_broker,
        private_broker=True,
    ),
)


async def open_rig(row: Disturbance) -> Rig:
    """Start what ``row`` needs: broker or Kafka of its own, a namespace, gateways, processors."""
    if row.cluster:
        return await open_cluster_rig()
    broker = PrivateBroker() if row.private_broker else None
    kafka = IsolatedKafka() if row.isolated_kafka else None
    ns: PipelineNamespace | None = None
    try:
        if broker is not None:
            await asyncio.to_thread(broker.start)
            ns = PipelineNamespace(mqtt_port=broker.port, admin=broker.admin)
        elif kafka is not None:
            await kafka.start()
            ns = PipelineNamespace(kafka=kafka.settings())
        else:
            ns = PipelineNamespace()
        await ns.prepare()
        rig = Rig(ns, [ns.gateway()], [ns.processor()], broker, kafka)
        await asyncio.gather(rig.gateway.start_and_wait(), rig.processor.start_and_wait())
        if broker is not None and row.name == "mosquitto-kill":
            await _broker_saved_since(broker, time.time(), rig)
    except BaseException:
        if ns is not None and ns.gateway_credentials is not None:
            ns.stop_all()
        if broker is not None:
            broker.close()
        if kafka is not None:
            kafka.stop()
        raise
    return rig


async def open_cluster_rig(
    gateways: int = CLUSTER_GATEWAYS,
    processors: int = CLUSTER_PROCESSORS,
    batch_max_records: int = 5000,
) -> Rig:
    """A 3-node Kafka cluster of the run's own, ``gateways`` gateways, ``processors`` processors.

    The gateways share the namespace's filters through a shared subscription
    group on the stack's Mosquitto; returns once every service is ready, every
    partition has a leader, and the consumer group is stable with every
    processor in it (no rebalance left over to blur the row).
    """
    cluster = IsolatedKafkaCluster()
    ns: PipelineNamespace | None = None
    try:
        await cluster.start()
        ns = cluster.namespace(
            gateways=gateways,
            share_group=f"s{uuid.uuid4().hex[:10]}",
            batch_max_records=batch_max_records,
        )
        await ns.prepare()
        topics = [ns.raw_topic, ns.readings_topic, ns.deadletter_topic]
        await wait_for(lambda: cluster.led(topics), 60, "the namespace's partitions led")
        rig = Rig(
            ns,
            [ns.gateway(login=i) for i in range(gateways)],
            [ns.processor() for _ in range(processors)],
            cluster=cluster,
        )
        await asyncio.gather(*(s.start_and_wait(120) for s in rig.gateways + rig.processors))
        namespace = ns
        await wait_for(
            lambda: namespace.group_stable(processors),
            120,
            f"{processors} processors in a stable consumer group",
        )
    except BaseException:
        if ns is not None and ns.gateway_credentials is not None:
            ns.stop_all()
        cluster.stop()
        raise
    return rig


async def _broker_saved_since(broker: PrivateBroker, since: float, rig: Rig) -> None:
    """Wait for the broker's next autosave (every 10 s), so its file holds the gateway's session.

    A broker killed before it ever saved the session comes back without the
    gateway's subscriptions: what is published before the gateway subscribes
    again matches nobody. A broker that has run a while has saved it; a fresh
    one has not, and the row would measure that instead of the kill.
    """
    saved = Path(broker.folder) / "data" / "mosquitto.db"

    def fresh() -> bool:
        return saved.exists() and saved.stat().st_mtime > since

    try:
        await wait_for(fresh, 15, f"{saved} saved")
    except SandboxError:
        rig.notes.append("the broker had not saved the gateway's session before the kill")


def close_rig(rig: Rig) -> None:
    try:
        rig.ns.stop_all()
    finally:
        if rig.broker is not None:
            rig.broker.close()
        if rig.kafka is not None:
            rig.kafka.stop()
        if rig.cluster is not None:
            rig.cluster.stop()
