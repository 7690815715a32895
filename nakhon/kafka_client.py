"""Options shared by every Kafka client of Nakhon: where Kafka is and how to log in.

One place turns :class:`KafkaSettings` into aiokafka's keyword arguments, so
the gateway, the processor, the bench and any admin client connect the same
way: plaintext, TLS (an :class:`ssl.SSLContext` from the CA, certificate and
key files), SASL (SCRAM or PLAIN) or SASL over TLS. Settings that contradict
each other, or that would be silently ignored, are refused with a
:class:`KafkaSecurityError` naming the variables to fix, before any connection.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Protocol

from aiokafka.helpers import create_ssl_context

from nakhon.config import KafkaSettings

_TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
_SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


class KafkaSecurityError(ValueError):
    """The Kafka security settings are incomplete or contradictory, or a TLS file is unusable."""


def kafka_client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client: where Kafka is and how to log in.

    Raises :class:`KafkaSecurityError` if the settings cannot make a connection
    that is what they say: TLS files without a TLS protocol, a SASL protocol
    without its mechanism, username or password, an unreadable certificate.
    """
    protocol = settings.security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": protocol,
    }
    if protocol in _TLS_PROTOCOLS:
        options["ssl_context"] = kafka_ssl_context(settings)
    elif tls_files := _tls_files(settings):
        raise KafkaSecurityError(
            f"{', '.join(tls_files)} set, but NAKHON_KAFKA_SECURITY_PROTOCOL={protocol} does "
            "not use TLS: set it to SSL or SASL_SSL (or unset those)"
        )
    if protocol in _SASL_PROTOCOLS:
        options |= _sasl_options(settings)
    elif settings.sasl_mechanism is not None:
        # Someone meant to log in; connecting anonymously instead would hide it.
        raise KafkaSecurityError(
            f"NAKHON_KAFKA_SASL_MECHANISM={settings.sasl_mechanism} set, but "
            f"NAKHON_KAFKA_SECURITY_PROTOCOL={protocol} does not log in: set it to SASL_SSL "
            "(or SASL_PLAINTEXT)"
        )
    return options


def kafka_producer_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for Nakhon's producers (the gateway's, the processor's).

    ``acks="all"`` with idempotence: a record counts as sent only once every
    in-sync replica has it, and a retried batch is never written twice.
    """
    return kafka_client_options(settings) | {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.linger_ms,
        "max_batch_size": settings.max_batch_bytes,
        "compression_type": None if settings.compression == "none" else settings.compression,
    }


def kafka_ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """The TLS context for ``SSL``/``SASL_SSL``: the broker's CA, and our certificate if any.

    Hostnames are always checked (aiokafka's ``create_ssl_context``). Without
    ``ssl_ca_file`` the system's CAs are trusted (a managed Kafka's public
    certificate).
    """
    if settings.ssl_key_file is not None and settings.ssl_cert_file is None:
        raise KafkaSecurityError(
            "NAKHON_KAFKA_SSL_KEY_FILE set without NAKHON_KAFKA_SSL_CERT_FILE: a client "
            "key needs the certificate it belongs to"
        )
    key_password = settings.ssl_key_password
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.ssl_ca_file,
            certfile=settings.ssl_cert_file,
            keyfile=settings.ssl_key_file,
            # Never OpenSSL's prompt on the terminal: an encrypted key without
            # its password fails here, with the message below.
            password=key_password.get_secret_value() if key_password else _no_key_password,
        )
        return context
    except OSError as exc:  # a missing or unreadable file; ssl.SSLError is an OSError too
        files = ", ".join(f"{k}={v}" for k, v in _tls_files(settings).items())
        raise KafkaSecurityError(
            f"cannot build Kafka's TLS context from {files or 'the system CAs'}: {exc}"
        ) from exc


def _no_key_password() -> str:
    return ""


def _sasl_options(settings: KafkaSettings) -> dict[str, Any]:
    password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
    missing = [
        name
        for name, value in (
            ("NAKHON_KAFKA_SASL_MECHANISM", settings.sasl_mechanism),
            ("NAKHON_KAFKA_SASL_USERNAME", settings.sasl_username),
            ("NAKHON_KAFKA_SASL_PASSWORD", password),
        )
        if not value
    ]
    if missing:
        raise KafkaSecurityError(
            f"NAKHON_KAFKA_SECURITY_PROTOCOL={settings.security_protocol} needs "
            f"{', '.join(missing)} (e.g. SCRAM-SHA-512 and the user's credentials)"
        )
    # aiokafka names them "plain" for PLAIN and SCRAM alike.
    return {
        "sasl_mechanism": settings.sasl_mechanism,
        "sasl_plain_username": settings.sasl_username,
        "sasl_plain_password": password,
    }


def _tls_files(settings: KafkaSettings) -> dict[str, str]:
    """The TLS files that are set, by variable name."""
    files = {
        "NAKHON_KAFKA_SSL_CA_FILE": settings.ssl_ca_file,
        "NAKHON_KAFKA_SSL_CERT_FILE": settings.ssl_cert_file,
        "NAKHON_KAFKA_SSL_KEY_FILE": settings.ssl_key_file,
    }
    return {name: str(path) for name, path in files.items() if path is not None}


class RecordProducer(Protocol):
    """What the gateway and the processor call on a Kafka producer (aiokafka's, in production)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        """Queue a record; the future resolves when Kafka acknowledged it."""
        ...
