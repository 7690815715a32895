"""``nakhon gateway --drain``: a gateway taken out of service loses nothing queued for it.

A stopped gateway's persistent session goes on collecting what devices
publish (a plain subscription, or its share of a shared one). Ending the
session (``--end-session``) would drop that; ``--drain`` takes the session
over, unsubscribes it, forwards what it holds to Kafka and only then ends it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.integration.conftest import Stack
from tests.integration.pipeline_harness import (
    PipelineNamespace,
    Publisher,
    count_rows,
    run_nakhon,
    senml,
    wait_for,
)

BASE_TIME = 1_795_300_000
QUEUED = 300


@pytest.fixture
async def ns(stack: Stack) -> AsyncIterator[PipelineNamespace]:
    namespace = PipelineNamespace()
    await namespace.prepare()
    yield namespace
    namespace.stop_all()


def _session_present(ns: PipelineNamespace) -> bool:
    """Whether the broker still keeps the gateway's session (connect without ending it)."""
    creds = ns.gateway_credentials
    assert creds is not None
    answered = threading.Event()
    present: list[bool] = []

    def on_connect(c: Any, u: Any, flags: mqtt.ConnectFlags, reason: Any, p: Any) -> None:
        present.append(bool(flags.session_present))
        answered.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=creds.clientid or "", protocol=mqtt.MQTTv5
    )
    client.username_pw_set(creds.username, creds.password)
    client.on_connect = on_connect
    # clean_start=False with the default session expiry of 0: looks, ends nothing new.
    client.connect("127.0.0.1", ns.mqtt_port, clean_start=False)
    client.loop_start()
    try:
        assert answered.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
        client.reinitialise()
    return present[0]


async def test_drain_forwards_what_the_stopped_gateways_session_holds_then_ends_it(
    ns: PipelineNamespace,
) -> None:
    gateway = ns.gateway()
    await gateway.start_and_wait()
    await ns.processor().start_and_wait()
    assert gateway.terminate() == 0  # graceful: its session stays, and queues

    sensor = f"{ns.name}-q"
    topic = ns.topic("chiang_mai", sensor, "senml")
    publisher = Publisher(ns.publisher_credentials)
    try:
        stream = [(topic, senml("pm25", float(i), BASE_TIME + i)) for i in range(QUEUED)]
        await asyncio.to_thread(publisher.publish_all, stream)
        assert count_rows(sensor, "pm2_5") == 0  # nobody reads them: queued in the session

        drained = await asyncio.to_thread(
            run_nakhon, "gateway", "--drain", "--idle-seconds", "2", env=ns.env()
        )
        assert drained.returncode == 0, drained.stderr
        assert f"{QUEUED} messages forwarded" in drained.stderr
    finally:
        publisher.close()
    # Every queued reading came through, once; the session is gone.
    await wait_for(lambda: count_rows(sensor, "pm2_5") >= QUEUED, 60, f"{QUEUED} rows stored")
    assert count_rows(sensor, "pm2_5") == QUEUED
    assert await asyncio.to_thread(_session_present, ns) is False
