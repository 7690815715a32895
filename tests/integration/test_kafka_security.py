"""Kafka with SCRAM-SHA-512 over TLS, through the local broker's SASL_SSL listener (:9095).

Every client is built from nakhon's own options (``nakhon.kafka_client``), as
the gateway, the processor and the bench build theirs. ``make up`` generates
the user's password into ``.nakhon/secrets/local.env``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from pydantic import SecretStr

from nakhon.config import KafkaSettings, load_settings
from nakhon.kafka_client import kafka_client_options, kafka_producer_options
from nakhon.local_stack import LOCAL_STACK
from tests.integration.conftest import Stack
from tests.integration.pipeline_harness import (
    PipelineNamespace,
    Publisher,
    count_rows,
    senml,
    wait_until,
)
from tools.sandbox import LOCAL_CA

SCRAM_TLS = LOCAL_STACK.kafka_scram_bootstrap


@pytest.fixture(scope="module")
def scram(stack: Stack) -> KafkaSettings:
    """The local SCRAM user over TLS, trusting the local CA: what an operator would set."""
    stored = load_settings().kafka
    if stored.sasl_username is None or stored.sasl_password is None:
        pytest.fail("no NAKHON_KAFKA_SASL_USERNAME/_PASSWORD in .nakhon/secrets/local.env: make up")
    return stored.model_copy(
        update={
            "bootstrap_servers": SCRAM_TLS,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "ssl_ca_file": LOCAL_CA,
        }
    )


@pytest.fixture
async def topic(scram: KafkaSettings) -> AsyncIterator[str]:
    """A topic of its own, created and deleted over SCRAM+TLS by an admin client."""
    name = f"t{uuid.uuid4().hex[:10]}.scram"
    admin = AIOKafkaAdminClient(**kafka_client_options(scram))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def test_a_record_round_trips_with_scram_over_tls(scram: KafkaSettings, topic: str) -> None:
    producer = AIOKafkaProducer(**kafka_producer_options(scram))
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"over tls", key=b"k", headers=[("h", b"v")])
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**kafka_client_options(scram), enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        batch = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=5000), 10)
        [record] = batch[tp]
        assert (record.key, record.value, list(record.headers)) == (
            b"k",
            b"over tls",
            [("h", b"v")],
        )
    finally:
        await consumer.stop()


async def _refused(settings: KafkaSettings) -> None:
    producer = AIOKafkaProducer(**kafka_producer_options(settings), request_timeout_ms=5000)
    try:
        with pytest.raises(KafkaConnectionError):
            await asyncio.wait_for(producer.start(), 30)
    finally:
        await producer.stop()


async def test_a_wrong_scram_password_is_refused(
    scram: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = scram.model_copy(update={"sasl_password": SecretStr("not-the-password-0123")})
    with caplog.at_level(logging.ERROR):
        await _refused(wrong)
    # aiokafka raises "Unable to bootstrap"; the reason is in its log, as in a service's.
    assert "SaslAuthenticationFailed" in caplog.text
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in caplog.text


async def test_an_unknown_user_is_refused(
    scram: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = scram.model_copy(update={"sasl_username": f"u{uuid.uuid4().hex[:8]}"})
    with caplog.at_level(logging.ERROR):
        await _refused(stranger)
    assert "SaslAuthenticationFailed" in caplog.text


async def test_a_client_that_does_not_trust_the_local_ca_fails(
    scram: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    # No NAKHON_KAFKA_SSL_CA_FILE: only the system's CAs, which never signed the broker.
    untrusting = scram.model_copy(update={"ssl_ca_file": None})
    with caplog.at_level(logging.ERROR):
        await _refused(untrusting)
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert "SaslAuthenticationFailed" not in caplog.text  # refused before any login


async def test_the_gateway_and_processor_run_over_scram_and_tls(scram: KafkaSettings) -> None:
    """A reading over MQTT reaches its row with both services on the SASL_SSL listener.

    The namespace hands its Kafka settings to the services as the switch an
    operator makes (address, protocol, mechanism, CA, the SCRAM user that
    ``make up`` wrote into local.env); it creates its topics over SCRAM+TLS too.
    """
    ns = PipelineNamespace(kafka=scram)
    await ns.prepare()
    publisher = None
    try:
        services = [ns.gateway(), ns.processor()]
        for svc in services:
            assert svc.env["NAKHON_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
            svc.start()
        publisher = Publisher(ns.publisher_credentials)
        sensor = f"{ns.name}-tls"
        reading = senml("pm25", 12, time.time())
        publisher.publish_all([(ns.topic("Chiang_Mai", sensor, "senml"), reading)])
        wait_until(lambda: count_rows(sensor) == 1, 30, "the row, through Kafka over SCRAM+TLS")
        for svc in services:
            log = Path(svc.log_path).read_text()
            assert "Authenticated as nakhon via SCRAM-SHA-512" in log, svc.command
        assert f"-> Kafka {SCRAM_TLS}" in Path(services[0].log_path).read_text()
    finally:
        if publisher is not None:
            publisher.close()
        ns.stop_all()
