"""The disturbances of ``make chaos``: which component is hurt, how, and on whose stack.

Each row runs in a rig of its own: a namespace (topics, consumer group,
gateway and processor of its own, :mod:`tools.sandbox`) on the stack's
Mosquitto and Kafka, except where the row hurts one of those: the Mosquitto
rows use a broker of the run's own configured as the stack's
(:class:`~tools.private_broker.PrivateBroker`), the Kafka row a Kafka of the
run's own (:class:`~tools.sandbox.IsolatedKafka`). PostgreSQL has no such
twin: its row stops the stack's, which every other service and test uses
meanwhile, so it runs only when asked for (``--postgres``).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tools.private_broker import PrivateBroker
from tools.sandbox import (
    REPO,
    IsolatedKafka,
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


@dataclass
class Rig:
    """One row's pipeline: its namespace, services, and the broker or Kafka of its own."""

    ns: PipelineNamespace
    gateway: Service
    processor: Service
    broker: PrivateBroker | None = None
    kafka: IsolatedKafka | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def mqtt_port(self) -> int:
        return self.ns.mqtt_port


@dataclass(frozen=True)
class Disturbance:
    name: str
    title: str
    #: Hurts the component and brings it back; returns when it is back.
    hurt: Callable[[Rig], Awaitable[None]]
    private_broker: bool = False
    isolated_kafka: bool = False
    #: Why the row is skipped unless asked for, and the flag that asks.
    opt_in: tuple[str, str] | None = None


async def _nothing(rig: Rig) -> None:
    return None


async def _kill_gateway(rig: Rig) -> None:
    rig.gateway.kill()
    rig.gateway = rig.ns.gateway()
    await rig.gateway.start_and_wait()


async def _kill_processor(rig: Rig) -> None:
    rig.processor.kill()
    rig.processor = rig.ns.processor()
    await rig.processor.start_and_wait()


async def _kill_kafka(rig: Rig) -> None:
    kafka = rig.kafka
    assert kafka is not None and kafka.proc is not None
    kafka.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(kafka.proc.wait, 30)
    await relaunch_isolated_kafka(kafka)


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
    """Start what ``row`` needs: broker or Kafka of its own, a namespace, gateway, processor."""
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
        rig = Rig(ns, ns.gateway(), ns.processor(), broker, kafka)
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
