"""The Kafka options builder: TLS contexts from files, SASL settings checked before connecting."""

from __future__ import annotations

import re
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from nakhon.config import KafkaSettings, Settings
from nakhon.identity.certificates import OPENSSL, issue_device_certificate
from nakhon.kafka_client import (
    KafkaSecurityError,
    kafka_client_options,
    kafka_producer_options,
)

SCRAM: dict[str, Any] = {
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "nakhon",
    "sasl_password": SecretStr("s3cret-s3cret-s3cret"),
}


def kafka(**fields: Any) -> KafkaSettings:
    return KafkaSettings.model_validate(fields)


def _openssl(*args: str) -> None:
    subprocess.run([OPENSSL, *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway CA: (certificate, key)."""
    d = tmp_path_factory.mktemp("ca")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "2", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"),
        "-subj", "/CN=test CA",
    )  # fmt: skip
    return d / "ca.crt", d / "ca.key"


def test_plaintext_by_default_without_tls_or_login() -> None:
    options = kafka_client_options(KafkaSettings())
    assert options == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_tls_protocols_get_a_verifying_context_from_the_ca_file(
    protocol: str, ca: tuple[Path, Path]
) -> None:
    extra = SCRAM if protocol == "SASL_SSL" else {}
    settings = kafka(security_protocol=protocol, ssl_ca_file=ca[0], **extra)
    options = kafka_client_options(settings)
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test CA"),),)]
    assert options["security_protocol"] == protocol


def test_sasl_ssl_logs_in_with_the_scram_settings(ca: tuple[Path, Path]) -> None:
    settings = kafka(security_protocol="SASL_SSL", ssl_ca_file=ca[0], **SCRAM)
    options = kafka_client_options(settings)
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "nakhon"
    assert options["sasl_plain_password"] == "s3cret-s3cret-s3cret"


def test_a_client_certificate_and_key_are_loaded(ca: tuple[Path, Path], tmp_path: Path) -> None:
    cert = issue_device_certificate("client-1", ca[0], ca[1], tmp_path, days=2)
    settings = kafka(
        security_protocol="SSL",
        ssl_ca_file=ca[0],
        ssl_cert_file=cert.certificate,
        ssl_key_file=cert.key,
    )
    assert isinstance(kafka_client_options(settings)["ssl_context"], ssl.SSLContext)


def test_an_encrypted_key_needs_its_password_and_never_prompts(
    ca: tuple[Path, Path], tmp_path: Path
) -> None:
    cert = issue_device_certificate("client-2", ca[0], ca[1], tmp_path, days=2)
    encrypted = tmp_path / "encrypted.key"
    _openssl(
        "pkey", "-in", str(cert.key), "-aes256", "-passout", "pass:key-password",
        "-out", str(encrypted),
    )  # fmt: skip
    base = {"security_protocol": "SSL", "ssl_cert_file": cert.certificate}
    with pytest.raises(KafkaSecurityError, match="NAKHON_KAFKA_SSL_KEY_FILE="):
        kafka_client_options(kafka(**base, ssl_key_file=encrypted))
    unlocked = kafka(**base, ssl_key_file=encrypted, ssl_key_password=SecretStr("key-password"))
    assert isinstance(kafka_client_options(unlocked)["ssl_context"], ssl.SSLContext)


@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ("sasl_mechanism", "NAKHON_KAFKA_SASL_MECHANISM"),
        ("sasl_username", "NAKHON_KAFKA_SASL_USERNAME"),
        ("sasl_password", "NAKHON_KAFKA_SASL_PASSWORD"),
    ],
)
@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_sasl_without_its_mechanism_or_credentials_is_refused(
    protocol: str, missing: str, variable: str, ca: tuple[Path, Path]
) -> None:
    tls = {"ssl_ca_file": ca[0]} if protocol == "SASL_SSL" else {}
    settings = kafka(
        security_protocol=protocol, **tls, **{k: v for k, v in SCRAM.items() if k != missing}
    )
    with pytest.raises(KafkaSecurityError, match=f"{protocol} needs {variable}"):
        kafka_client_options(settings)


def test_an_empty_password_counts_as_missing() -> None:
    settings = kafka(
        security_protocol="SASL_PLAINTEXT", **(SCRAM | {"sasl_password": SecretStr("")})
    )
    with pytest.raises(KafkaSecurityError, match="NAKHON_KAFKA_SASL_PASSWORD"):
        kafka_client_options(settings)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_tls_files_without_a_tls_protocol_are_refused(protocol: str, ca: tuple[Path, Path]) -> None:
    extra = SCRAM if protocol == "SASL_PLAINTEXT" else {}
    settings = kafka(security_protocol=protocol, ssl_ca_file=ca[0], **extra)
    with pytest.raises(KafkaSecurityError, match=r"NAKHON_KAFKA_SSL_CA_FILE set.*not use TLS"):
        kafka_client_options(settings)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_a_sasl_mechanism_without_a_sasl_protocol_is_refused(
    protocol: str, ca: tuple[Path, Path]
) -> None:
    settings = kafka(security_protocol=protocol, ssl_ca_file=ca[0], **SCRAM)
    if protocol == "PLAINTEXT":
        settings = settings.model_copy(update={"ssl_ca_file": None})
    with pytest.raises(KafkaSecurityError, match="SASL_MECHANISM=SCRAM-SHA-512 set"):
        kafka_client_options(settings)


def test_stored_credentials_alone_do_not_turn_sasl_on() -> None:
    """The local stack keeps its SCRAM user in local.env while the services use PLAINTEXT."""
    settings = kafka(sasl_username="nakhon", sasl_password=SecretStr("x" * 20))
    assert "sasl_mechanism" not in kafka_client_options(settings)


def test_a_key_without_its_certificate_is_refused(ca: tuple[Path, Path]) -> None:
    settings = kafka(security_protocol="SSL", ssl_ca_file=ca[0], ssl_key_file=ca[1])
    with pytest.raises(KafkaSecurityError, match="KEY_FILE set without NAKHON_KAFKA_SSL_CERT"):
        kafka_client_options(settings)


def test_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.crt"
    settings = kafka(security_protocol="SSL", ssl_ca_file=missing)
    with pytest.raises(KafkaSecurityError, match=re.escape(f"NAKHON_KAFKA_SSL_CA_FILE={missing}")):
        kafka_client_options(settings)


def test_producer_options_are_acks_all_idempotent_over_the_same_security(
    ca: tuple[Path, Path],
) -> None:
    settings = kafka(security_protocol="SASL_SSL", ssl_ca_file=ca[0], compression="none", **SCRAM)
    options = kafka_producer_options(settings)
    assert options["acks"] == "all"
    assert options["enable_idempotence"] is True
    assert options["compression_type"] is None
    assert options["linger_ms"] == settings.linger_ms
    assert options["max_batch_size"] == settings.max_batch_bytes
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"


def test_the_tls_and_sasl_settings_come_from_nakhon_kafka_variables(
    monkeypatch: pytest.MonkeyPatch, ca: tuple[Path, Path]
) -> None:
    for name, value in {
        "NAKHON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "NAKHON_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "NAKHON_KAFKA_SASL_USERNAME": "nakhon",
        "NAKHON_KAFKA_SASL_PASSWORD": "from-the-environment",
        "NAKHON_KAFKA_SSL_CA_FILE": str(ca[0]),
    }.items():
        monkeypatch.setenv(name, value)
    kafka = Settings(_env_file=None).kafka  # type: ignore[call-arg]
    assert kafka.ssl_ca_file == ca[0]
    assert kafka_client_options(kafka)["sasl_plain_password"] == "from-the-environment"
