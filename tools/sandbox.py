"""An isolated pipeline: real gateway and processor subprocesses in a namespace.

Each :class:`PipelineNamespace` has its own MQTT topic root, shared-subscription
group, Kafka topics and consumer group, so the integration tests and ``nakhon
bench`` neither see nor disturb the services ``make up`` runs, nor each other.
Only the database is shared; users of a namespace keep apart there by sensor
ids that start with the namespace's name.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
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


async def wait_for(
    check: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str
) -> None:
    """:func:`wait_until` for async code: the event loop runs on while it waits.

    A coroutine function is awaited; any other ``check`` runs in a worker
    thread, since it may block (a query, an HTTP request).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = check() if inspect.iscoroutinefunction(check) else await asyncio.to_thread(check)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() >= deadline:
            raise SandboxError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


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

    async def start_and_wait(self, timeout_s: float = 60) -> None:
        """:meth:`start`, then wait for readiness without blocking the event loop.

        A service whose metrics port was taken meanwhile (a free port is only
        free when picked: any client's outgoing connection may take it next)
        starts again on another one, twice at most.
        """
        for attempt in range(3):
            logged = self.log_path.stat().st_size if self.log_path.exists() else 0
            self.start(wait_ready=False)
            try:
                await wait_for(self.ready, timeout_s, f"{self.command} ready ({self.log_path})")
                return
            except SandboxError:
                if attempt == 2 or not self._port_taken(logged):
                    raise
                self._move_port()

    def _port_taken(self, logged: int) -> bool:
        """The service exited because its port was in use (its log since byte ``logged``)."""
        if self.proc is None or self.proc.poll() is None:
            return False
        with self.log_path.open("rb") as log:
            log.seek(logged)
            return b"address already in use" in log.read()

    def _move_port(self) -> None:
        """The metrics and readiness port of the service: a new free one."""
        [name] = [k for k in self.env if k.endswith("_METRICS_PORT")]
        old, new = self.env[name], str(free_port())
        self.env = self.env | {name: new}
        self.ready_url = self.ready_url.replace(f":{old}/", f":{new}/")

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise SandboxError(f"{self.command} exited; see {self.log_path}")
        return http_ok(self.ready_url)

    def readiness_status(self) -> int | None:
        """The HTTP status of /readyz (200 ready, 503 not yet), or None if nothing answers."""
        try:
            with urllib.request.urlopen(self.ready_url, timeout=1) as resp:  # noqa: S310  (loopback)
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

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
    #: The broker of the namespace's gateway and publishers: the stack's, unless a
    #: test brings its own to restart (tools/private_broker.py) with its admin.
    mqtt_port: int = LOCAL_STACK.mqtt_port
    admin: Callable[[], DynsecAdmin] = broker_admin
    #: The gateway's shared-subscription group; None (the default, as in
    #: production): it subscribes to its filters themselves.
    share_group: str | None = None
    #: How many gateway logins :meth:`prepare` provisions (``gateway(login=i)``):
    #: each gateway needs its own username and client id; with a
    #: :attr:`share_group`, they split the namespace's messages between them.
    gateways: int = 1
    #: Filled by :meth:`prepare`: every gateway login, ``gateway_credentials`` first.
    gateway_logins: list[Credentials] = field(default_factory=list)
    #: The namespace's Kafka topics: partitions, replication factor, and
    #: ``min.insync.replicas`` (None: the broker's default). A cluster asks for
    #: 3 and 2 (:meth:`IsolatedKafkaCluster.namespace`).
    partitions: int = 3
    replication_factor: int = 1
    min_insync_replicas: int | None = None

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

    @property
    def db_application_name(self) -> str:
        """The ``application_name`` of the namespace's processors' database sessions.

        Given as ``PGAPPNAME`` (the writer's own name is only a fallback), so a
        test that ends processor sessions ends these, not the stack's processor's.
        """
        return f"nakhon-processor-{self.name}"

    def topic(self, city: str, sensor: str, fmt: str) -> str:
        return f"{self.root}/{city}/{sensor}/{fmt}"

    @property
    def topic_filters(self) -> list[str]:
        return [f"{self.root}/#", f"{self.root}-ttn/#", f"{self.root}-cs/#"]

    def _gateway_names(self) -> list[str]:
        """The gateways' login names: the namespace's, then ``<name>-2``, ``<name>-3``..."""
        return [self.name] + [f"{self.name}-{i}" for i in range(2, self.gateways + 1)]

    def _identities(self) -> list[Identity]:
        """The gateways' identities, then the publishing bridge's."""
        gateways = [
            gateway_identity(name, self.share_group, self.topic_filters)
            for name in self._gateway_names()
        ]
        return [*gateways, bridge_identity(self.name, self.topic_filters)]

    async def prepare(self) -> None:
        """Create the namespace's Kafka topics and its gateways' and publisher's credentials."""
        await self.create_topics()
        identities = self._identities()
        with self.admin() as admin:
            *gateways, publisher = provision.create(admin, [(i, None) for i in identities])
        self.gateway_logins = gateways
        self.gateway_credentials, self.publisher_credentials = gateways[0], publisher

    def _login(self, login: int) -> Credentials:
        """Gateway login number ``login`` (0: :attr:`gateway_credentials`)."""
        if login == 0 and self.gateway_credentials is not None:
            return self.gateway_credentials
        if login < len(self.gateway_logins):
            return self.gateway_logins[login]
        raise SandboxError(
            f"no gateway login {login}: prepare() provisions {self.gateways} (gateways=N)"
        )

    def env(self, login: int = 0) -> dict[str, str]:
        fmts = ["senml", "senml-cbor", "json", "ngsi", "position"]
        routes = [f"{self.root}/{{city}}/{{sensor_id}}/{f}={f}" for f in fmts]
        routes += [
            f"{self.root}-ttn/v3/{{app}}/devices/{{sensor_id}}/up=tts-v3",
            f"{self.root}-cs/application/{{app}}/device/{{sensor_id}}/event/up=chirpstack-v4",
        ]
        if self.gateway_credentials is None:
            raise SandboxError("call prepare() first: the gateway needs its credentials")
        gw = self._login(login)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NAKHON_")}
        env.update(
            {
                "NAKHON_MQTT_TOPIC_FILTERS": json.dumps(self.topic_filters),
                "NAKHON_MQTT_PORT": str(self.mqtt_port),
                "NAKHON_MQTT_SHARE_GROUP": self.share_group or "",
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
        configs = (
            {}
            if self.min_insync_replicas is None
            else {"min.insync.replicas": str(self.min_insync_replicas)}
        )
        admin = AIOKafkaAdminClient(**kafka_client_options(self.kafka))
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        t,
                        num_partitions=self.partitions,
                        replication_factor=self.replication_factor,
                        topic_configs=configs,
                    )
                    for t in (self.raw_topic, self.readings_topic, self.deadletter_topic)
                ]
            )
        finally:
            await admin.close()

    def gateway(self, *, tls: bool = False, login: int = 0) -> Service:
        """A gateway of the namespace; with ``tls``, it reaches the broker on 8883 over TLS.

        ``login``: which of the :attr:`gateways` logins (its username and client
        id) it uses. A gateway started again after a kill, with the same login,
        takes over the killed one's session, as a supervisor's restart would.
        """
        port = free_port()
        env = self.env(login) | {"NAKHON_GATEWAY_METRICS_PORT": str(port)}
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
        env = self.env() | {
            "NAKHON_PROCESSOR_METRICS_PORT": str(port),
            "PGAPPNAME": self.db_application_name,
        }
        svc = Service("processor", env, f"http://127.0.0.1:{port}/readyz", self._log("processor"))
        self.services.append(svc)
        return svc

    def _log(self, what: str) -> Path:
        """The log of the namespace's next ``what``: one file per service (``-2``, ``-3``...)."""
        earlier = sum(1 for svc in self.services if svc.command == what)
        return LOGS / f"{self.name}-{what}{f'-{earlier + 1}' if earlier else ''}.log"

    def stop_all(self) -> None:
        """Kill what still runs and end the gateways' MQTT session (nothing queues for it)."""
        for svc in self.services:
            if svc.proc is not None and svc.proc.poll() is None:
                svc.proc.kill()
                svc.proc.wait(10)
        if self.gateway_credentials is None:
            return
        used = {
            svc.env["NAKHON_MQTT_USERNAME"] for svc in self.services if svc.command == "gateway"
        }
        for gw in self.gateway_logins or [self.gateway_credentials]:
            if gw.username in used:
                end_session(
                    MqttSettings(
                        port=self.mqtt_port,
                        username=gw.username,
                        password=SecretStr(gw.password),
                        client_id=gw.clientid or "",
                    )
                )
        with self.admin() as admin:
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
                found += [_dead_letter(m) for msgs in batch.values() for m in msgs]
        finally:
            await consumer.stop()
        return found

    async def all_dead_letters(self, timeout_s: float = 30) -> list[dict[str, object]]:
        """Every record of the namespace's dead-letter topic, read up to its end as of now.

        No waiting for more: call it once the dead letters are known to be in,
        e.g. after :meth:`caught_up` (a processor publishes a batch's dead
        letters, and waits for Kafka's acks, before it commits the batch).
        """
        found: list[dict[str, object]] = []
        async with _offset_clients(self.kafka) as (admin, consumer):
            partitions = await _partitions(admin, self.deadletter_topic)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
            deadline = time.monotonic() + timeout_s
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"{self.deadletter_topic} not read to its end in {timeout_s}s"
                    )
                batch = await consumer.getmany(timeout_ms=500)
                found += [_dead_letter(m) for msgs in batch.values() for m in msgs]
        return found

    async def consumer_lag(self) -> int:
        """Records of the raw topic that the namespace's consumer group has not committed."""
        async with _offset_clients(self.kafka) as (admin, consumer):
            partitions = await _partitions(admin, self.raw_topic)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(self.name, partitions=partitions)
        lag = 0
        for tp, end in ends.items():
            at = committed[tp].offset if tp in committed else -1  # -1: nothing committed
            lag += end - max(at, 0)
        return lag

    async def consumer_group(self) -> tuple[str, int]:
        """The namespace's consumer group: its state (``Stable``...) and how many members."""
        admin = AIOKafkaAdminClient(**kafka_client_options(self.kafka))
        await admin.start()
        try:
            [response] = await admin.describe_consumer_groups([self.name])
        finally:
            await admin.close()
        # DescribeGroups: (error_code, group_id, state, protocol_type, protocol, members, ...)
        group = response.groups[0]
        if group[0] != 0:
            raise SandboxError(f"describing consumer group {self.name}: error {group[0]}")
        return str(group[2]), len(group[5])

    async def group_stable(self, members: int) -> bool:
        """The consumer group has ``members`` members and no rebalance under way.

        False, not an error, while the group's coordinator cannot say (being
        elected, on a node just killed): a caller waits on this (:func:`wait_for`).
        """
        try:
            return await self.consumer_group() == ("Stable", members)
        except (KafkaError, SandboxError):
            return False

    async def caught_up(self) -> bool:
        """The processors have committed everything the raw topic holds so far.

        A processor commits a batch's offsets only after the batch is in the
        database and its dead letters and readings are in Kafka: zero lag means
        all of that is done for every record produced before the check.
        """
        try:
            return await self.consumer_lag() == 0
        except KafkaError as exc:
            if exc.retriable:  # e.g. the group's coordinator not elected yet
                return False
            raise


@asynccontextmanager
async def _offset_clients(
    kafka: KafkaSettings,
) -> AsyncIterator[tuple[AIOKafkaAdminClient, AIOKafkaConsumer]]:
    """An admin client and a consumer outside any group, both started, to read offsets."""
    admin = AIOKafkaAdminClient(**kafka_client_options(kafka))
    consumer = AIOKafkaConsumer(**kafka_client_options(kafka), enable_auto_commit=False)
    await admin.start()
    try:
        await consumer.start()
        try:
            yield admin, consumer
        finally:
            await consumer.stop()
    finally:
        await admin.close()


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``, as the cluster's metadata lists them."""
    [described] = await admin.describe_topics([topic])
    if described["error_code"] != 0 or not described["partitions"]:
        raise SandboxError(f"no topic {topic} in Kafka (error {described['error_code']})")
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


def _dead_letter(m: ConsumerRecord[bytes, bytes]) -> dict[str, object]:
    headers = {k: v.decode() for k, v in m.headers}
    return {"value": m.value, "key": m.key, **headers}


#: The Kafka jars and broker logging of ``make up`` (deploy/local/services/kafka.sh).
KAFKA_LIBS = Path(os.environ.get("NAKHON_STATE_DIR", REPO / ".nakhon")) / "kafka" / "libs"
_KAFKA_LOGGING = REPO / "deploy" / "local" / "kafka"
#: The heap of a sandboxed Kafka node: small, the machine is shared.
KAFKA_HEAP = "256m"


def _kafka_java() -> str:
    java = shutil.which("java")
    if java is None or not any(KAFKA_LIBS.glob("kafka_*.jar")):
        raise SandboxError(f"no java or no Kafka jars in {KAFKA_LIBS}: run make up first")
    return java


def _format_kafka_storage(java: str, config: Path, cluster_id: str, log_path: Path) -> None:
    """Kafka's StorageTool on ``config``'s log directory, for the cluster ``cluster_id``."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # The tool gets a small heap and a quick JIT: it runs for a second or two.
        formatted = subprocess.run(  # noqa: S603  (our own command line)
            [java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
             f"-Dlog4j2.configurationFile={_KAFKA_LOGGING / 'log4j2-tools.yaml'}",
             "-cp", f"{KAFKA_LIBS}/*", "kafka.tools.StorageTool", "format",
             "-t", cluster_id, "-c", str(config)],
            stdout=log, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    if formatted.returncode != 0:
        raise SandboxError(f"formatting an isolated Kafka failed; see {log_path}")


def _launch_kafka(java: str, config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """The broker on ``config`` (run in its folder), logging to ``log_path``; no waiting."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(  # noqa: S603  (our own command line)
            [java, f"-Xms{KAFKA_HEAP}", f"-Xmx{KAFKA_HEAP}", "-XX:+UseG1GC",
             "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={_KAFKA_LOGGING / 'log4j2.yaml'}",
             "-cp", f"{KAFKA_LIBS}/*", "kafka.Kafka", str(config)],
            stdout=log, stderr=subprocess.STDOUT, cwd=config.parent,
        )  # fmt: skip


def _kraft_config(
    *,
    node_id: int,
    port: int,
    controller_port: int,
    voters: str,
    data: Path,
    replication: int,
    min_isr: int,
    extra: tuple[str, ...] = (),
) -> str:
    """One combined broker + controller node: plaintext on loopback, internal topics replicated."""
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=3",
            f"default.replication.factor={replication}",
            f"min.insync.replicas={min_isr}",
            f"offsets.topic.replication.factor={replication}",
            "offsets.topic.num.partitions=3",
            f"transaction.state.log.replication.factor={replication}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={replication}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "num.network.threads=2",
            "num.io.threads=2",
            *extra,
            "",
        ]
    )


async def _registered_brokers(bootstrap_servers: str) -> set[int] | None:
    """The node ids of the brokers the cluster lists now, or None if nobody answers."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return {int(b["node_id"]) for b in cluster.get("brokers", [])}
    except KafkaError:
        return None
    finally:
        await admin.close()


@dataclass
class IsolatedKafka:
    """A one-node KRaft Kafka of one test's own, from the jars ``make up`` installed.

    For the tests that freeze or kill Kafka: the stack's broker, which every
    other service and test uses, stays untouched. Plaintext on free ports, its
    data in a temporary folder; :meth:`stop` kills it and deletes the folder.
    """

    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    directory: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers)

    @property
    def log_path(self) -> Path:
        return LOGS / f"kafka-{self.port}.log"

    async def start(self, timeout_s: float = 60) -> None:
        """Format the storage, start the broker, and wait until it answers."""
        await asyncio.to_thread(self._launch)
        await wait_for(self._answers, timeout_s, f"Kafka on {self.port} (log: {self.log_path})")

    def _launch(self) -> None:
        java = _kafka_java()
        self.directory = Path(tempfile.mkdtemp(prefix="nakhon-kafka-"))
        config = self.directory / "server.properties"
        config.write_text(self._config())
        _format_kafka_storage(java, config, _kafka_cluster_id(), self.log_path)
        self.proc = _launch_kafka(java, config, self.log_path)

    def _config(self) -> str:
        assert self.directory is not None
        return _kraft_config(
            node_id=1,
            port=self.port,
            controller_port=self.controller_port,
            voters=f"1@127.0.0.1:{self.controller_port}",
            data=self.directory / "data",
            replication=1,
            min_isr=1,
            # A test freezes it to make Kafka answer nothing, not to have it
            # fence itself: past the default 9 s, on SIGCONT the node's
            # controller may fence its own broker (every partition without
            # a leader for a moment). A freeze stays well under a minute.
            extra=("broker.session.timeout.ms=60000",),
        )

    async def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise SandboxError(f"the isolated Kafka exited; see {self.log_path}")
        return bool(await _registered_brokers(self.bootstrap_servers))

    def freeze(self) -> None:
        """SIGSTOP: alive, its connections open, answering nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGKILL (frozen or not: its data goes anyway) and delete its folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def _kafka_cluster_id() -> str:
    """A cluster id as Kafka's ``StorageTool random-uuid`` prints it (without a JVM start)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka's Uuid.randomUuid() avoids those
            return text


async def relaunch_isolated_kafka(
    kafka: IsolatedKafka, timeout_s: float = 90, broker_session_timeout_ms: int = 9000
) -> None:
    """Start ``kafka`` again on the data it has (after a kill: no new format), and wait.

    For the harnesses that kill Kafka mid-stream and bring it back
    (``python -m tools.chaos``): the same ports and log directory, so its
    topics, offsets and producer states are recovered. The broker session
    timeout goes back to Kafka's default (9 s, as the stack's): the node's
    controller keeps the killed broker's registration until that session
    expires, and refuses the new one meanwhile (DUPLICATE_BROKER_REGISTRATION);
    with the 60 s a freeze needs, the broker gives up registering first.
    """
    java = shutil.which("java")
    if java is None or kafka.directory is None:
        raise SandboxError("relaunch needs java and a Kafka started before (start())")
    if kafka.proc is not None and kafka.proc.poll() is None:
        raise SandboxError(f"the isolated Kafka on {kafka.port} still runs")
    config = kafka.directory / "server.properties"
    lines = [
        line
        for line in config.read_text().splitlines()
        if not line.startswith("broker.session.timeout.ms=")
    ]
    config.write_text(
        "\n".join([*lines, f"broker.session.timeout.ms={broker_session_timeout_ms}", ""])
    )
    kafka.proc = await asyncio.to_thread(_launch_kafka, java, config, kafka.log_path)
    await wait_for(kafka._answers, timeout_s, f"Kafka on {kafka.port} again ({kafka.log_path})")


@dataclass
class KafkaNode:
    """One node of an :class:`IsolatedKafkaCluster`: broker and controller in one JVM."""

    node_id: int
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return LOGS / f"kafka-{self.port}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class IsolatedKafkaCluster:
    """A KRaft cluster of the run's own: ``size`` nodes (3), each broker and controller.

    Built as :class:`IsolatedKafka` builds one node (the jars ``make up``
    installed, plaintext on free ports, data in a temporary folder), with
    ``controller.quorum.voters`` listing every node, so the quorum survives one
    node down. The internal topics (consumer offsets, transaction state) have
    replication factor 3 and ``min.insync.replicas`` 2, as :meth:`namespace`
    gives the namespace's topics: a record acknowledged with acks=all is on two
    nodes at least. The broker session timeout stays Kafka's default (9 s): a
    killed node is fenced, and its partitions led elsewhere, that long after.

    :meth:`kill` (SIGKILL) and :meth:`restart` one node by its id (1 to
    ``size``); :meth:`leader` says which node leads a partition now.
    """

    size: int = 3
    replication: int = 3
    min_insync_replicas: int = 2
    nodes: list[KafkaNode] = field(default_factory=list)
    directory: Path | None = None

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes = [KafkaNode(i) for i in range(1, self.size + 1)]
        self.replication = min(self.replication, self.size)
        self.min_insync_replicas = min(self.min_insync_replicas, self.replication)

    @property
    def bootstrap_servers(self) -> str:
        """Every node's listener: a client bootstraps from whichever answers."""
        return ",".join(node.address for node in self.nodes)

    def settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers)

    def namespace(self, **kwargs: Any) -> PipelineNamespace:
        """A namespace on this cluster whose topics have its replication and min ISR."""
        kwargs.setdefault("kafka", self.settings())
        kwargs.setdefault("replication_factor", self.replication)
        kwargs.setdefault("min_insync_replicas", self.min_insync_replicas)
        return PipelineNamespace(**kwargs)

    def node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise SandboxError(f"no node {node_id} in the cluster ({len(self.nodes)} nodes)")

    def _config_path(self, node: KafkaNode) -> Path:
        assert self.directory is not None
        return self.directory / f"node-{node.node_id}" / "server.properties"

    def _config(self, node: KafkaNode) -> str:
        assert self.directory is not None
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        return _kraft_config(
            node_id=node.node_id,
            port=node.port,
            controller_port=node.controller_port,
            voters=voters,
            data=self._config_path(node).parent / "data",
            replication=self.replication,
            min_isr=self.min_insync_replicas,
        )

    async def start(self, timeout_s: float = 180) -> None:
        """Format every node's storage, start them all, wait until every broker is registered."""
        java = _kafka_java()
        self.directory = Path(tempfile.mkdtemp(prefix="nakhon-kafka-cluster-"))
        cluster_id = _kafka_cluster_id()
        for node in self.nodes:
            config = self._config_path(node)
            config.parent.mkdir(parents=True)
            config.write_text(self._config(node))
        await asyncio.gather(
            *(
                asyncio.to_thread(
                    _format_kafka_storage, java, self._config_path(n), cluster_id, n.log_path
                )
                for n in self.nodes
            )
        )
        for node in self.nodes:
            node.proc = _launch_kafka(java, self._config_path(node), node.log_path)
        everyone = {n.node_id for n in self.nodes}
        await wait_for(
            lambda: self._registered(everyone),
            timeout_s,
            f"{len(self.nodes)} Kafka nodes registered (logs: {LOGS}/kafka-<port>.log)",
        )

    async def _registered(self, node_ids: set[int]) -> bool:
        for node in self.nodes:
            if node.node_id in node_ids and not node.running:
                raise SandboxError(f"Kafka node {node.node_id} exited; see {node.log_path}")
        # Asked of the nodes themselves (a node lists itself only once registered).
        addresses = ",".join(self.node(i).address for i in sorted(node_ids))
        brokers = await _registered_brokers(addresses)
        return brokers is not None and node_ids <= brokers

    async def kill(self, node_id: int) -> None:
        """SIGKILL one node: no flush, no goodbye, its leaderships and its vote gone at once."""
        node = self.node(node_id)
        if node.proc is None or node.proc.poll() is not None:
            raise SandboxError(f"Kafka node {node_id} does not run")
        node.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(node.proc.wait, 30)

    async def restart(self, node_id: int, timeout_s: float = 120) -> None:
        """Start a killed node again on its data; return once it is registered again.

        Its registration waits until the controller let the killed node's
        session expire (``broker.session.timeout.ms``, 9 s).
        """
        node = self.node(node_id)
        if node.running:
            raise SandboxError(f"Kafka node {node_id} still runs")
        node.proc = await asyncio.to_thread(
            _launch_kafka, _kafka_java(), self._config_path(node), node.log_path
        )
        await wait_for(
            lambda: self._registered({node_id}),
            timeout_s,
            f"Kafka node {node_id} registered again ({node.log_path})",
        )

    async def describe(self, topic: str) -> list[dict[str, Any]]:
        """``topic``'s partitions as the cluster's metadata has them: partition, leader, isr."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=",".join(n.address for n in self.nodes if n.running),
            request_timeout_ms=5000,
        )
        await admin.start()
        try:
            [described] = await admin.describe_topics([topic])
        finally:
            await admin.close()
        if described["error_code"] != 0:
            raise SandboxError(f"no topic {topic} (error {described['error_code']})")
        return sorted(described["partitions"], key=lambda p: int(p["partition"]))

    async def leaders(self, topic: str) -> dict[int, int]:
        """Partition -> the node id that leads it (-1: none right now)."""
        return {int(p["partition"]): int(p["leader"]) for p in await self.describe(topic)}

    async def leader(self, topic: str, partition: int = 0) -> int:
        """The node that leads ``topic``'s ``partition`` now, as clients find it.

        Asked the way a client asks (:class:`aiokafka.AIOKafkaClient`'s metadata,
        ``cluster.leader_for_partition``); SandboxError while it has no leader.
        """
        client = AIOKafkaClient(
            bootstrap_servers=",".join(n.address for n in self.nodes if n.running),
            request_timeout_ms=5000,
        )
        try:
            await client.bootstrap()
            client.add_topic(topic)
            await client.force_metadata_update()
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        finally:
            await client.close()
        if leader is None or leader < 0:
            raise SandboxError(f"{topic}[{partition}] has no leader now")
        return int(leader)

    async def led(self, topics: list[str]) -> bool:
        """Every partition of ``topics`` is known to the brokers and has a leader."""
        try:
            for topic in topics:
                if any(int(p["leader"]) < 0 for p in await self.describe(topic)):
                    return False
        except (KafkaError, SandboxError):
            return False
        return True

    async def in_sync(self, topics: list[str]) -> bool:
        """Every partition of ``topics`` has all its replicas in sync (a node back caught up)."""
        try:
            for topic in topics:
                for p in await self.describe(topic):
                    if len(p["isr"]) < len(p["replicas"]):
                        return False
        except (KafkaError, SandboxError):
            return False
        return True

    def stop(self) -> None:
        """SIGKILL every node and delete the cluster's folder."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait(30)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
