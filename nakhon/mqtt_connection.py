"""Where an MQTT broker is and how to reach it: host, port, TLS.

Every MQTT client Nakhon makes (the gateway, the broker admin, the simulator,
the benchmark) is built here, so TLS is set up the same way everywhere.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from nakhon.config import MqttSettings
from nakhon.local_stack import LOCAL_STACK


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str = "127.0.0.1"
    port: int = LOCAL_STACK.mqtt_port
    #: CA certificate(s) to verify the broker with; set it to use TLS.
    tls_ca_file: Path | None = None
    #: Client certificate and key, for brokers that ask for one (X.509 authentication).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @classmethod
    def from_settings(cls, settings: MqttSettings) -> MqttEndpoint:
        return cls(
            settings.host,
            settings.port,
            settings.tls_ca_file,
            settings.tls_cert_file,
            settings.tls_key_file,
        )

    @property
    def tls(self) -> bool:
        return self.tls_ca_file is not None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}{' (TLS)' if self.tls else ''}"

    def client(
        self,
        client_id: str = "",
        *,
        manual_ack: bool = False,
        client_class: type[mqtt.Client] = mqtt.Client,
    ) -> mqtt.Client:
        """An MQTT 5 paho client (of ``client_class``) for this broker, not yet connected."""
        client = client_class(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
        )
        if self.tls_ca_file is not None:
            client.tls_set(
                ca_certs=str(self.tls_ca_file),
                certfile=str(self.tls_cert_file) if self.tls_cert_file else None,
                keyfile=str(self.tls_key_file) if self.tls_key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        return client

    def connect(self, client: mqtt.Client, keepalive: int = 30, **kwargs: Any) -> None:
        """Connect now (raises OSError if the broker cannot be reached)."""
        client.connect(self.host, self.port, keepalive=keepalive, **kwargs)


def subscription(share_group: str | None, topic_filter: str) -> str:
    """What a gateway subscribes to for ``topic_filter``: the filter, or its shared form."""
    return f"$share/{share_group}/{topic_filter}" if share_group else topic_filter
