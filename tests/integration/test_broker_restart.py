"""No reading lost when Mosquitto restarts (a broker of the test's own, configured as the stack's).

Mosquitto 2.0 keeps a persistent session's plain subscriptions (and what is
queued for it) across its own restart, but not its shared subscriptions: a
message published after the restart and before the gateway re-subscribes
matches nobody and is dropped, though its publisher got a PUBACK. So the
gateway subscribes to its filters themselves (``NAKHON_MQTT_SHARE_GROUP``
empty, the default). The second test is the control: the same restart with a
shared subscription loses what was published in that window; the day it
stops losing, shared subscriptions have become safe on this broker.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.integration.conftest import Stack
from tests.integration.pipeline_harness import (
    PipelineNamespace,
    Publisher,
    count_rows,
    pm25_stream,
    settle,
    wait_for,
)
from tools.private_broker import PrivateBroker
from tools.sandbox import Service

BASE_TIME = 1_795_000_000


@pytest.fixture
def broker(stack: Stack) -> Iterator[PrivateBroker]:
    with PrivateBroker() as b:
        yield b


async def _namespace(broker: PrivateBroker, share_group: bool) -> PipelineNamespace:
    ns = PipelineNamespace(mqtt_port=broker.port, admin=broker.admin)
    if share_group:
        ns.share_group = ns.name
    await ns.prepare()
    return ns


@pytest.fixture
async def ns(broker: PrivateBroker) -> AsyncIterator[PipelineNamespace]:
    namespace = await _namespace(broker, share_group=False)
    yield namespace
    namespace.stop_all()


def _stream(ns: PipelineNamespace, prefix: str, n: int) -> list[tuple[str, bytes]]:
    """n readings from 20 sensors, each reading at its own time."""
    return pm25_stream(ns, prefix, n, sensors=20, base=BASE_TIME)


def _connected(gateway: Service) -> float:
    url = gateway.ready_url.replace("/readyz", "/metrics")
    with urllib.request.urlopen(url, timeout=2) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("nakhon_gateway_mqtt_connected "):
                return float(line.split()[1])
    raise AssertionError(f"nakhon_gateway_mqtt_connected not in {url}")


def _publish_right_after_restart(
    broker: PrivateBroker,
    ns: PipelineNamespace,
    gateway: Service,
    messages: list[tuple[str, bytes]],
) -> None:
    """Restart the broker and publish ``messages`` before the gateway is back (checked)."""
    broker.restart()
    early = Publisher(ns.publisher_credentials, port=broker.port)
    try:
        early.publish_all(messages)  # every PUBACK received
        assert _connected(gateway) == 0, "the gateway came back too soon: no window was tested"
    finally:
        early.close()


async def test_a_graceful_broker_restart_loses_nothing(
    broker: PrivateBroker, ns: PipelineNamespace
) -> None:
    gateway = ns.gateway()
    await gateway.start_and_wait()
    await ns.processor().start_and_wait()
    prefix = f"{ns.name}-r"
    first, window, away = (
        _stream(ns, f"{prefix}a", 600),
        _stream(ns, f"{prefix}b", 200),
        _stream(ns, f"{prefix}c", 300),
    )
    publisher = Publisher(ns.publisher_credentials, port=broker.port)
    try:
        # Mid-stream: the first 300 acknowledged, the rest in flight when the broker stops.
        await asyncio.to_thread(publisher.publish_all, first[:300])
        infos = [publisher.publish(t, p) for t, p in first[300:]]
        # Published after the restart, before the gateway re-subscribed.
        await asyncio.to_thread(_publish_right_after_restart, broker, ns, gateway, window)
        for info in infos:  # the publisher reconnects by itself and sends what was unacked
            await asyncio.to_thread(info.wait_for_publish, 60)
            assert info.is_published()

        # Published while the gateway is stopped, kept through a second restart.
        assert gateway.terminate() == 0
        await asyncio.to_thread(publisher.publish_all, away)
        broker.restart()
        await gateway.start_and_wait()
    finally:
        publisher.close()

    late = Publisher(ns.publisher_credentials, port=broker.port)
    try:
        await settle(ns, late, [t for t, _ in first + window + away])
    finally:
        late.close()
    assert count_rows(f"{prefix}a", "pm2_5") == 600
    assert count_rows(f"{prefix}b", "pm2_5") == 200
    assert count_rows(f"{prefix}c", "pm2_5") == 300


async def test_control_a_shared_subscription_misses_what_came_while_it_was_forgotten(
    broker: PrivateBroker,
) -> None:
    ns = await _namespace(broker, share_group=True)
    try:
        gateway = ns.gateway()
        await gateway.start_and_wait()
        await ns.processor().start_and_wait()
        prefix = f"{ns.name}-s"
        window = _stream(ns, prefix, 100)
        await asyncio.to_thread(_publish_right_after_restart, broker, ns, gateway, window)
        await wait_for(gateway.ready, 30, "the gateway subscribed again")
        publisher = Publisher(ns.publisher_credentials, port=broker.port)
        try:
            await settle(ns, publisher, [t for t, _ in window])
        finally:
            publisher.close()
        # Acknowledged by the broker, delivered to nobody: Mosquitto 2.0's limit.
        assert count_rows(prefix, "pm2_5") == 0
    finally:
        ns.stop_all()
