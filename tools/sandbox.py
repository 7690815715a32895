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

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
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
        """:meth:`start`, then wait for readiness without blocking the event loop."""
        self.start(wait_ready=False)
        await wait_for(self.ready, timeout_s, f"{self.command} ready (log: {self.log_path})")

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

    def _identities(self) -> tuple[Identity, Identity]:
        gateway = gateway_identity(self.name, self.share_group, self.topic_filters)
        return gateway, bridge_identity(self.name, self.topic_filters)

    async def prepare(self) -> None:
        """Create the namespace's Kafka topics and its gateway's and publisher's credentials."""
        await self.create_topics()
        gateway, publisher = self._identities()
        with self.admin() as admin:
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
        gw = self.gateway_credentials
        if gw is None:
            return
        if any(svc.command == "gateway" for svc in self.services):
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
        java = shutil.which("java")
        if java is None or not any(KAFKA_LIBS.glob("kafka_*.jar")):
            raise SandboxError(f"no java or no Kafka jars in {KAFKA_LIBS}: run make up first")
        self.directory = Path(tempfile.mkdtemp(prefix="nakhon-kafka-"))
        config = self.directory / "server.properties"
        config.write_text(self._config())
        LOGS.mkdir(parents=True, exist_ok=True)
        classpath = ["-cp", f"{KAFKA_LIBS}/*"]
        with self.log_path.open("ab") as log:
            # Its tool gets a small heap and a quick JIT: it runs for a second or two.
            formatted = subprocess.run(  # noqa: S603  (our own command line)
                [java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
                 f"-Dlog4j2.configurationFile={_KAFKA_LOGGING / 'log4j2-tools.yaml'}",
                 *classpath, "kafka.tools.StorageTool", "format",
                 "-t", _kafka_cluster_id(), "-c", str(config)],
                stdout=log, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
            if formatted.returncode != 0:
                raise SandboxError(f"formatting the isolated Kafka failed; see {self.log_path}")
            self.proc = subprocess.Popen(  # noqa: S603  (our own command line)
                [java, "-Xms256m", "-Xmx256m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                 f"-Dlog4j2.configurationFile={_KAFKA_LOGGING / 'log4j2.yaml'}",
                 *classpath, "kafka.Kafka", str(config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.directory,
            )  # fmt: skip

    def _config(self) -> str:
        assert self.directory is not None
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.directory / 'data'}",
                "num.partitions=3",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=3",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # A test freezes it to make Kafka answer nothing, not to have it
                # fence itself: past the default 9 s, on SIGCONT the node's
                # controller may fence its own broker (every partition without
                # a leader for a moment). A freeze stays well under a minute.
                "broker.session.timeout.ms=60000",
                "auto.create.topics.enable=false",
                "num.network.threads=2",
                "num.io.threads=2",
                "",
            ]
        )

    async def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise SandboxError(f"the isolated Kafka exited; see {self.log_path}")
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            return bool(cluster.get("brokers"))
        except KafkaError:
            return False
        finally:
            await admin.close()

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
    directory = kafka.directory
    config = directory / "server.properties"
    lines = [
        line
        for line in config.read_text().splitlines()
        if not line.startswith("broker.session.timeout.ms=")
    ]
    config.write_text(
        "\n".join([*lines, f"broker.session.timeout.ms={broker_session_timeout_ms}", ""])
    )
    with kafka.log_path.open("ab") as log:
        kafka.proc = await asyncio.to_thread(
            subprocess.Popen,  # our own command line, as IsolatedKafka._launch starts it
            [java, "-Xms256m", "-Xmx256m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={_KAFKA_LOGGING / 'log4j2.yaml'}",
             "-cp", f"{KAFKA_LIBS}/*", "kafka.Kafka", str(config)],
            stdout=log, stderr=subprocess.STDOUT, cwd=directory,
        )  # fmt: skip
    await wait_for(kafka._answers, timeout_s, f"Kafka on {kafka.port} again ({kafka.log_path})")
