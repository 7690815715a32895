"""An isolated pipeline: real gateway and processor subprocesses in a namespace.

Each :class:`PipelineNamespace` has its own MQTT topic root, shared-subscription
group, Kafka topics and consumer group, so the integration tests and ``nakhon
bench`` neither see nor disturb the services ``make up`` runs, nor each other.
Only the database is shared; users of a namespace keep apart there by sensor
ids that start with the namespace's name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr

from nakhon.config import KafkaSettings, MqttSettings, load_settings
from nakhon.identity import provision
from nakhon.identity.dynsec import DynsecAdmin
from nakhon.identity.provision import Credentials
from nakhon.identity.roles import Identity, bridge_identity, gateway_identity
from nakhon.ingest.mqtt_source import end_session
from nakhon.kafka_client import kafka_client_options
from nakhon.local_stack import LOCAL_STACK
from nakhon.mqtt_connection import MqttEndpoint

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO / ".nakhon" / "logs" / "sandbox"
KAFKA = LOCAL_STACK.kafka_bootstrap
#: How a namespace's services and clients reach Kafka, as NAKHON_KAFKA_* variables
#: (the topics and the consumer group are the namespace's own).
_KAFKA_CONNECTION_FIELDS = (
    "bootstrap_servers",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_key_password",
)
#: The city the namespace's LoRaWAN uplinks fall back to (a registered one).
LORAWAN_CITY = "chachoengsao"
#: The local stack's TLS listener and the CA that signed its certificate (make up).
MQTT_TLS_PORT = LOCAL_STACK.mqtt_tls_port
#: ... and its listener where a client certificate is the login.
MQTT_X509_PORT = LOCAL_STACK.mqtt_x509_port
LOCAL_CA = REPO / ".nakhon" / "tls" / "ca.crt"


class SandboxError(RuntimeError):
    """A sandboxed service did not come up, or exited."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise SandboxError(f"timed out after {timeout}s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310  (our own loopback URLs)
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class Service:
    """One ``nakhon <command>`` subprocess."""

    command: str
    env: dict[str, str]
    ready_url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603  (our own command line)
                [sys.executable, "-m", "nakhon.cli", self.command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        if wait_ready:
            wait_until(self.ready, 60, f"{self.command} ready (log: {self.log_path})")

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise SandboxError(f"{self.command} exited; see {self.log_path}")
        return http_ok(self.ready_url)

    def kill(self) -> None:
        """SIGKILL: no draining, no goodbye."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def broker_admin() -> DynsecAdmin:
    """An admin connection to the local broker, with the stack's generated admin password."""
    settings = load_settings()
    if settings.mqtt.admin_password is None:
        raise SandboxError("no NAKHON_MQTT_ADMIN_PASSWORD: run make up first (it generates one)")
    endpoint = MqttEndpoint.from_settings(settings.mqtt)
    return DynsecAdmin(endpoint, settings.mqtt.admin_password.get_secret_value())


@dataclass
class PipelineNamespace:
    name: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    batch_max_records: int = 5000
    services: list[Service] = field(default_factory=list)
    #: Filled by :meth:`prepare`: the namespace's gateway and its publishing bridge.
    gateway_credentials: Credentials | None = None
    publisher_credentials: Credentials | None = None
    #: Where and how the namespace's clients and services reach Kafka: the local
    #: stack's plaintext listener unless given (``nakhon bench`` passes its
    #: settings, so a SASL_SSL configuration is measured end to end).
    kafka: KafkaSettings = field(default_factory=lambda: KafkaSettings(bootstrap_servers=KAFKA))

    @property
    def root(self) -> str:
        """The MQTT topic root standing for ``city`` in this namespace."""
        return self.name

    @property
    def raw_topic(self) -> str:
        return f"{self.name}.raw"

    @property
    def deadletter_topic(self) -> str:
        return f"{self.name}.deadletter"

    @property
    def readings_topic(self) -> str:
        return f"{self.name}.readings"

    def topic(self, city: str, sensor: str, fmt: str) -> str:
        return f"{self.root}/{city}/{sensor}/{fmt}"

    @property
    def topic_filters(self) -> list[str]:
        return [f"{self.root}/#", f"{self.root}-ttn/#", f"{self.root}-cs/#"]

    def _identities(self) -> tuple[Identity, Identity]:
        gateway = gateway_identity(self.name, self.name, self.topic_filters)
        return gateway, bridge_identity(self.name, self.topic_filters)

    async def prepare(self) -> None:
        """Create the namespace's Kafka topics and its gateway's and publisher's credentials."""
        await self.create_topics()
        gateway, publisher = self._identities()
        with broker_admin() as admin:
            self.gateway_credentials, self.publisher_credentials = provision.create(
                admin, [(gateway, None), (publisher, None)]
            )

    def env(self) -> dict[str, str]:
        fmts = ["senml", "senml-cbor", "json", "ngsi", "position"]
        routes = [f"{self.root}/{{city}}/{{sensor_id}}/{f}={f}" for f in fmts]
        routes += [
            f"{self.root}-ttn/v3/{{app}}/devices/{{sensor_id}}/up=tts-v3",
            f"{self.root}-cs/application/{{app}}/device/{{sensor_id}}/event/up=chirpstack-v4",
        ]
        gw = self.gateway_credentials
        if gw is None:
            raise SandboxError("call prepare() first: the gateway needs its credentials")
        env = {k: v for k, v in os.environ.items() if not k.startswith("NAKHON_")}
        env.update(
            {
                "NAKHON_MQTT_TOPIC_FILTERS": json.dumps(self.topic_filters),
                "NAKHON_MQTT_SHARE_GROUP": self.name,
                "NAKHON_MQTT_USERNAME": gw.username,
                "NAKHON_MQTT_PASSWORD": gw.password,
                "NAKHON_MQTT_CLIENT_ID": gw.clientid or "",
                "NAKHON_KAFKA_RAW_TOPIC": self.raw_topic,
                "NAKHON_KAFKA_READINGS_TOPIC": self.readings_topic,
                "NAKHON_KAFKA_DEADLETTER_TOPIC": self.deadletter_topic,
                "NAKHON_KAFKA_CONSUMER_GROUP": self.name,
                "NAKHON_PROCESSOR_ROUTES": json.dumps(routes),
                "NAKHON_PROCESSOR_LORAWAN_CITY": LORAWAN_CITY,
                "NAKHON_PROCESSOR_BATCH_MAX_RECORDS": str(self.batch_max_records),
                "NAKHON_LOG_LEVEL": "INFO",
            }
        )
        env.update(self._kafka_env())
        return env

    def _kafka_env(self) -> dict[str, str]:
        """:attr:`kafka`'s connection settings as the services' NAKHON_KAFKA_* variables."""
        env: dict[str, str] = {}
        for name in _KAFKA_CONNECTION_FIELDS:
            value = getattr(self.kafka, name)
            if value is not None:
                text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
                env[f"NAKHON_KAFKA_{name.upper()}"] = text
        return env

    async def create_topics(self) -> None:
        admin = AIOKafkaAdminClient(**kafka_client_options(self.kafka))
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(t, num_partitions=3, replication_factor=1)
                    for t in (self.raw_topic, self.readings_topic, self.deadletter_topic)
                ]
            )
        finally:
            await admin.close()

    def gateway(self, *, tls: bool = False) -> Service:
        """A gateway of the namespace; with ``tls``, it reaches the broker on 8883 over TLS."""
        port = free_port()
        env = self.env() | {"NAKHON_GATEWAY_METRICS_PORT": str(port)}
        if tls:
            env |= {
                "NAKHON_MQTT_PORT": str(MQTT_TLS_PORT),
                "NAKHON_MQTT_TLS_CA_FILE": str(LOCAL_CA),
            }
        svc = Service("gateway", env, f"http://127.0.0.1:{port}/readyz", self._log("gateway"))
        self.services.append(svc)
        return svc

    def processor(self) -> Service:
        port = free_port()
        env = self.env() | {"NAKHON_PROCESSOR_METRICS_PORT": str(port)}
        svc = Service("processor", env, f"http://127.0.0.1:{port}/readyz", self._log("processor"))
        self.services.append(svc)
        return svc

    def _log(self, what: str) -> Path:
        return LOGS / f"{self.name}-{what}.log"

    def stop_all(self) -> None:
        """Kill what still runs and end the gateways' MQTT session (nothing queues for it)."""
        for svc in self.services:
            if svc.proc is not None and svc.proc.poll() is None:
                svc.proc.kill()
                svc.proc.wait(10)
        gw = self.gateway_credentials
        if gw is None:
            return
        if any(svc.command == "gateway" for svc in self.services):
            end_session(
                MqttSettings(
                    username=gw.username,
                    password=SecretStr(gw.password),
                    client_id=gw.clientid or "",
                )
            )
        with broker_admin() as admin:
            for identity in self._identities():
                provision.revoke(admin, identity)

    async def dead_letters(self, expect: int, wait_s: float = 30) -> list[dict[str, object]]:
        """Read ``expect`` records of the namespace's dead-letter topic."""
        consumer = AIOKafkaConsumer(
            self.deadletter_topic,
            **kafka_client_options(self.kafka),
            auto_offset_reset="earliest",
        )
        await consumer.start()
        found: list[dict[str, object]] = []
        try:
            deadline = time.monotonic() + wait_s
            while len(found) < expect and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    for m in msgs:
                        headers = {k: v.decode() for k, v in m.headers}
                        found.append({"value": m.value, "key": m.key, **headers})
        finally:
            await consumer.stop()
        return found
