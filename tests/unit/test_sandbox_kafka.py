"""The sandbox hands its Kafka settings to the services it starts (no services started here)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from nakhon.config import KafkaSettings
from nakhon.identity.provision import Credentials
from tools.sandbox import KAFKA, PipelineNamespace


def _namespace(kafka: KafkaSettings | None = None) -> PipelineNamespace:
    ns = PipelineNamespace() if kafka is None else PipelineNamespace(kafka=kafka)
    ns.gateway_credentials = Credentials(username="gw", password="pw", kind="gateway")
    return ns


def test_by_default_the_services_use_the_local_plaintext_listener() -> None:
    env = _namespace().env()
    assert env["NAKHON_KAFKA_BOOTSTRAP_SERVERS"] == KAFKA
    assert env["NAKHON_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert not {k for k in env if k.startswith(("NAKHON_KAFKA_SASL", "NAKHON_KAFKA_SSL"))}


def test_scram_over_tls_reaches_the_services_and_the_topics_stay_the_namespaces() -> None:
    kafka = KafkaSettings(
        bootstrap_servers="127.0.0.1:9095",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="nakhon",
        sasl_password=SecretStr("s3cret-s3cret-s3cret"),
        ssl_ca_file=Path("/tmp/ca.crt"),
        raw_topic="not.the.namespaces",
    )
    ns = _namespace(kafka)
    env = ns.env()
    assert {k: v for k, v in env.items() if k.startswith("NAKHON_KAFKA_")} == {
        "NAKHON_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9095",
        "NAKHON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "NAKHON_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "NAKHON_KAFKA_SASL_USERNAME": "nakhon",
        "NAKHON_KAFKA_SASL_PASSWORD": "s3cret-s3cret-s3cret",
        "NAKHON_KAFKA_SSL_CA_FILE": "/tmp/ca.crt",
        "NAKHON_KAFKA_RAW_TOPIC": ns.raw_topic,
        "NAKHON_KAFKA_READINGS_TOPIC": ns.readings_topic,
        "NAKHON_KAFKA_DEADLETTER_TOPIC": ns.deadletter_topic,
        "NAKHON_KAFKA_CONSUMER_GROUP": ns.name,
    }
