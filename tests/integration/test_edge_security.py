"""Every attack on the MQTT edge, tried through the real Mosquitto, Kafka and TimescaleDB.

A namespace runs its own gateway and processor; devices are made with the
project's own command (``nakhon devices add``). Each refused attempt must
leave no row; a legitimate reading after it must still be stored.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from nakhon.local_stack import LOCAL_STACK
from nakhon.mqtt_connection import MqttEndpoint
from tests.integration.conftest import Stack
from tests.integration.pipeline_harness import (
    PipelineNamespace,
    Publisher,
    count_rows,
    owner_dsn,
    run_nakhon,
    senml,
    wait_until,
)
from tools.sandbox import KAFKA, LOCAL_CA, MQTT_TLS_PORT, MQTT_X509_PORT

NOT_AUTHORIZED = 135
CITY = "khon_kaen"
OTHER_CITY = "phuket"


def nakhon(*args: str) -> subprocess.CompletedProcess[str]:
    return run_nakhon(*args, timeout_s=60)


@dataclass
class Probe:
    """An MQTT 5 client that reports what the broker answered to each packet."""

    username: str | None
    password: str | None
    client_id: str = ""
    port: int = LOCAL_STACK.mqtt_port
    #: Client certificate and key, to log in with them on the certificate listener.
    certificate: tuple[Path, Path] | None = None
    connack: ReasonCode | None = None
    disconnected: threading.Event = field(default_factory=threading.Event)
    received: list[mqtt.MQTTMessage] = field(default_factory=list)
    _answers: dict[int, Any] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        if self.username is not None:
            self.client.username_pw_set(self.username, self.password)
        if self.certificate is not None:
            crt, key = self.certificate
            self.client.tls_set(ca_certs=str(LOCAL_CA), certfile=str(crt), keyfile=str(key))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, m: self.received.append(m)

    def connect(self) -> ReasonCode:
        connected = threading.Event()
        self.client.on_connect_fail = lambda *a: connected.set()
        self._connected = connected
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert connected.wait(10), "no CONNACK"
        assert self.connack is not None
        return self.connack

    def publish(self, topic: str, payload: bytes) -> int:
        info = self.client.publish(topic, payload, qos=1)
        return int(self._wait(info.mid).value)

    def subscribe(self, topic_filter: str) -> int:
        _, mid = self.client.subscribe(topic_filter, qos=1)
        assert mid is not None
        reasons = self._wait(mid)
        return int(reasons[0].value)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # Close paho's wake-up socket pair now: left to a garbage collection of
        # the client's reference cycle, the sockets may go first and warn.
        self.client.reinitialise()

    def _wait(self, mid: int) -> Any:
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self._answers, 10), "no answer"
            return self._answers.pop(mid)

    def _on_connect(self, c: Any, u: Any, flags: Any, reason: ReasonCode, p: Any) -> None:
        self.connack = reason
        self._connected.set()

    def _on_publish(self, c: Any, u: Any, mid: int, reason: ReasonCode, p: Any) -> None:
        with self._cond:
            self._answers[mid] = reason
            self._cond.notify_all()

    def _on_subscribe(self, c: Any, u: Any, mid: int, reasons: list[ReasonCode], p: Any) -> None:
        with self._cond:
            self._answers[mid] = reasons
            self._cond.notify_all()


@pytest.fixture(scope="module")
async def ns(stack: Stack) -> AsyncIterator[PipelineNamespace]:
    namespace = PipelineNamespace()
    await namespace.prepare()
    try:
        namespace.gateway().start()
        namespace.processor().start()
        yield namespace
    finally:
        namespace.stop_all()
        like = (namespace.name + "%",)
        with psycopg.connect(owner_dsn()) as conn:
            conn.execute("DELETE FROM readings WHERE sensor_id LIKE %s", like)
            conn.execute("DELETE FROM sensors WHERE sensor_id LIKE %s", like)


@pytest.fixture(scope="module")
def device(ns: PipelineNamespace) -> Iterator[dict[str, str]]:
    """A device made with `nakhon devices add`, in khon_kaen under the namespace's root."""
    sensor = f"{ns.name}-aq1"
    done = nakhon("devices", "add", sensor, "--city", CITY, "--topic-root", ns.root, "--json")
    assert done.returncode == 0, done.stderr
    creds: dict[str, str] = json.loads(done.stdout)
    assert creds["username"] == sensor
    assert creds["topic_prefix"] == f"{ns.root}/{CITY}/{sensor}/"
    yield creds
    nakhon("devices", "revoke", sensor)


@pytest.fixture(scope="module")
def publisher(ns: PipelineNamespace) -> Iterator[Publisher]:
    pub = Publisher(ns.publisher_credentials)
    yield pub
    pub.close()


@pytest.fixture
def probe_of(device: dict[str, str]) -> Iterator[Any]:
    probes: list[Probe] = []

    def make(username: str | None = None, password: str | None = None, **kw: Any) -> Probe:
        p = Probe(username, password, **kw)
        probes.append(p)
        return p

    yield make
    for p in probes:
        p.close()


def now() -> float:
    return round(time.time(), 3)


def test_the_device_stores_its_own_reading(
    ns: PipelineNamespace, device: dict[str, str], probe_of: Any
) -> None:
    probe = probe_of(device["username"], device["password"])
    assert probe.connect().value == 0
    sensor = device["username"]
    assert probe.publish(device["topic_prefix"] + "senml", senml("pm25", 12.0, now())) == 0
    wait_until(lambda: count_rows(sensor) == 1, 30, "the device's row")
    with psycopg.connect(owner_dsn()) as conn:
        row = conn.execute("SELECT city FROM readings WHERE sensor_id = %s", (sensor,)).fetchone()
    assert row == (CITY,)


@pytest.mark.parametrize(
    ("who", "password"),
    [(None, None), ("nobody", "guess"), ("device", "wrong-password")],
    ids=["anonymous", "unknown-user", "wrong-password"],
)
def test_connecting_without_valid_credentials_is_refused(
    device: dict[str, str], probe_of: Any, who: str | None, password: str | None
) -> None:
    username = device["username"] if who == "device" else who
    reason = probe_of(username, password).connect()
    assert reason.is_failure
    assert reason.value in (134, 135)  # bad user name or password / not authorized


def test_a_device_cannot_publish_as_anyone_else(
    ns: PipelineNamespace, device: dict[str, str], probe_of: Any
) -> None:
    probe = probe_of(device["username"], device["password"])
    assert probe.connect().value == 0
    victim = f"{ns.name}-victim"
    body = senml("pm25", 999.0, now())
    attacks = {
        "another sensor": ns.topic(CITY, victim, "senml"),
        "another city": ns.topic(OTHER_CITY, device["username"], "senml"),
        "a LoRaWAN topic": f"{ns.root}-ttn/v3/evil@x/devices/{victim}/up",
        "outside the tree": "city/khon_kaen/x/senml",
        "the control topic": "$CONTROL/dynamic-security/v1",
    }
    answers = {what: probe.publish(topic, body) for what, topic in attacks.items()}
    assert answers == dict.fromkeys(attacks, NOT_AUTHORIZED)
    # A legitimate reading after the attacks is stored; none of the attacks is.
    assert probe.publish(device["topic_prefix"] + "senml", senml("pm10", 30.0, now())) == 0
    wait_until(
        lambda: count_rows(device["username"]) >= 1 and _metric_rows(device["username"], "pm10"),
        30,
        "the legitimate reading",
    )
    assert count_rows(victim) == 0
    with psycopg.connect(owner_dsn()) as conn:
        spoofed = conn.execute(
            "SELECT count(*) FROM readings WHERE sensor_id = %s AND city = %s",
            (device["username"], OTHER_CITY),
        ).fetchone()
    assert spoofed == (0,)


def _metric_rows(sensor: str, metric: str) -> bool:
    with psycopg.connect(owner_dsn()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings WHERE sensor_id = %s AND metric = %s", (sensor, metric)
        ).fetchone()
    return row is not None and row[0] > 0


def test_a_device_cannot_read_anything(
    ns: PipelineNamespace, device: dict[str, str], probe_of: Any
) -> None:
    probe = probe_of(device["username"], device["password"])
    assert probe.connect().value == 0
    for topic_filter in (
        f"{ns.root}/#",
        "city/#",
        "#",
        f"$share/{ns.name}/{ns.root}/#",
        "$share/nakhon/city/#",
        "$CONTROL/dynamic-security/#",
    ):
        assert probe.subscribe(topic_filter) == NOT_AUTHORIZED, topic_filter


def test_the_gateways_password_works_only_with_its_random_client_id(
    ns: PipelineNamespace, probe_of: Any
) -> None:
    gw = ns.gateway_credentials
    assert gw is not None and gw.clientid is not None
    assert len(gw.clientid) >= 24  # 96 random bits: not guessable like nakhon-gateway-<host>
    other_id = probe_of(gw.username, gw.password, client_id=f"nakhon-gateway-{ns.name}")
    assert other_id.connect().is_failure


def test_a_gateway_reads_its_own_filters_and_nothing_else(
    ns: PipelineNamespace, probe_of: Any
) -> None:
    """Its filters themselves (the subscription Mosquitto keeps across restarts), no more."""
    gw = ns.gateway_credentials
    assert gw is not None and gw.clientid is not None
    probe = probe_of(gw.username, gw.password, client_id=gw.clientid)
    assert probe.connect().value == 0
    assert probe.subscribe(f"{ns.root}/#") == 1  # granted, QoS 1
    for topic_filter in (
        "city/#",  # the stack's devices
        "#",
        f"{ns.root}-other/#",
        f"$share/{ns.name}/{ns.root}/#",  # no share group was given to it
        "$share/nakhon/city/#",
        "$CONTROL/dynamic-security/#",
    ):
        assert probe.subscribe(topic_filter) == NOT_AUTHORIZED, topic_filter


def test_rotate_and_revoke_disconnect_at_once(ns: PipelineNamespace, probe_of: Any) -> None:
    sensor = f"{ns.name}-rot"
    made = nakhon("devices", "add", sensor, "--city", CITY, "--topic-root", ns.root, "--json")
    assert made.returncode == 0, made.stderr
    old = json.loads(made.stdout)["password"]
    connected = probe_of(sensor, old)
    assert connected.connect().value == 0

    rotated = nakhon("devices", "rotate", sensor, "--json")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)["password"]
    assert connected.disconnected.wait(10), "the device kept its connection after rotate"
    assert probe_of(sensor, old).connect().is_failure
    fresh = probe_of(sensor, new)
    assert fresh.connect().value == 0

    revoked = nakhon("devices", "revoke", sensor)
    assert revoked.returncode == 0, revoked.stderr
    assert fresh.disconnected.wait(10), "the device kept its connection after revoke"
    assert probe_of(sensor, new).connect().is_failure


def test_adding_a_device_twice_or_in_an_unregistered_city_is_refused(
    ns: PipelineNamespace, device: dict[str, str]
) -> None:
    again = nakhon("devices", "add", device["username"], "--city", CITY, "--topic-root", ns.root)
    assert again.returncode == 1
    assert "already registered" in again.stderr
    nowhere = nakhon("devices", "add", f"{ns.name}-x", "--city", "atlantis")
    assert nowhere.returncode == 1
    assert "not registered" in nowhere.stderr
    bad = nakhon("devices", "add", "Bad/Id", "--city", CITY)
    assert bad.returncode == 2


def test_devices_import_is_idempotent_and_keeps_passwords_off_the_screen(
    ns: PipelineNamespace, tmp_path: Any, probe_of: Any
) -> None:
    fleet = tmp_path / "fleet.csv"
    ids = [f"{ns.name}-f{i}" for i in range(3)]
    fleet.write_text("sensor_id,city,kind\n" + "".join(f"{i},{CITY},air_quality\n" for i in ids))
    first = nakhon("devices", "import", str(fleet), "--topic-root", ns.root)
    assert first.returncode == 0, first.stderr
    creds_file = tmp_path / "fleet.credentials.csv"
    assert creds_file.stat().st_mode & 0o777 == 0o600
    rows = creds_file.read_text().splitlines()[1:]
    assert len(rows) == 3
    for row in rows:
        assert row.split(",")[1] not in first.stdout + first.stderr
    second = nakhon("devices", "import", str(fleet), "--topic-root", ns.root)
    assert second.returncode == 0
    assert "3 unchanged, 0 new" in second.stdout
    username, password, _ = rows[0].split(",")
    assert probe_of(username, password).connect().value == 0
    for i in ids:
        nakhon("devices", "revoke", i)


async def test_registry_disagreements_are_dead_lettered_not_stored(
    ns: PipelineNamespace, device: dict[str, str], publisher: Publisher
) -> None:
    """Through a bridge (it may publish anywhere under its filters): the processor double-checks."""
    sensor = device["username"]  # registered in khon_kaen
    stranger = f"{ns.name}-stranger"
    publisher.publish_all(
        [
            (ns.topic(OTHER_CITY, sensor, "senml"), senml("pm25", 1.0, now())),
            (ns.topic("atlantis", stranger, "senml"), senml("pm25", 2.0, now())),
        ]
    )
    letters = await letters_until(
        ns, lambda found: {"city_mismatch", "unknown_city"} <= {str(d["reason"]) for d in found}
    )
    mismatch = next(d for d in letters if d["reason"] == "city_mismatch")
    assert mismatch["mqtt_topic"] == ns.topic(OTHER_CITY, sensor, "senml")
    assert count_rows(stranger) == 0
    with psycopg.connect(owner_dsn()) as conn:
        wrong = conn.execute(
            "SELECT count(*) FROM readings WHERE sensor_id = %s AND city <> %s", (sensor, CITY)
        ).fetchone()
    assert wrong == (0,)


async def test_poison_payloads_neither_stall_nor_crash_the_pipeline(
    ns: PipelineNamespace, publisher: Publisher
) -> None:
    """Each poison once, then an ordinary reading on the same partition: stored within seconds."""
    sensor = f"{ns.name}-poisoned"
    topic = ns.topic(CITY, sensor, "senml")
    # ~900 KB whose dead letter (payload + 90 rejections naming 10 KB metrics)
    # used to exceed Kafka's 1 MiB and be retried forever.
    huge_names = orjson.dumps([{"n": f"{i:03d}" + "m" * 9997, "vs": "x"} for i in range(90)])
    poison = [
        (topic, huge_names),
        (ns.topic(CITY, sensor, "senml-cbor"), cbor2.dumps([{0: "pm25", 2: 2**1100}])),
        (ns.topic(CITY, sensor, "senml-cbor"), cbor2.dumps([{0: "pm25", 2: 1, 6: 2**1100}])),
        (ns.topic(CITY, sensor, "json"), b'{"pm25": 1' + b"0" * 400 + b"}"),
    ]
    publisher.publish_all(poison)
    await _produce_raw(ns, topic, senml("pm25", 7.0, now()), received_at=b"9" * 20)
    publisher.publish_all([(topic, senml("pm10", 8.0, now()))])
    started = time.monotonic()
    wait_until(lambda: count_rows(sensor) == 2, 30, "the readings after the poison")
    assert time.monotonic() - started < 15
    expected = {
        (topic, "non_numeric_value"),
        (ns.topic(CITY, sensor, "senml-cbor"), "not_finite"),
        (ns.topic(CITY, sensor, "senml-cbor"), "invalid_time"),
        (ns.topic(CITY, sensor, "json"), "malformed_json"),
    }
    letters = await letters_until(
        ns, lambda found: expected <= {(str(d["mqtt_topic"]), str(d["reason"])) for d in found}
    )
    big = next(d for d in letters if d["reason"] == "non_numeric_value")
    assert big["value"] == huge_names  # kept whole: it fits the budget now
    processor_log = next(s for s in ns.services if s.command == "processor").log_path
    assert "Traceback" not in processor_log.read_text(errors="replace")


async def letters_until(
    ns: PipelineNamespace, enough: Callable[[list[dict[str, object]]], bool], timeout: float = 30
) -> list[dict[str, object]]:
    """Every dead letter of the namespace, read again until ``enough`` of them arrived."""
    deadline = time.monotonic() + timeout
    while True:
        found = await ns.all_dead_letters()  # to the topic's end as of now: no timed read
        if enough(found):
            return found
        assert time.monotonic() < deadline, f"dead letters so far: {[d['reason'] for d in found]}"
        await asyncio.sleep(0.2)


async def _produce_raw(ns: PipelineNamespace, topic: str, value: bytes, received_at: bytes) -> None:
    """A record on the namespace's nakhon.raw as a gateway would write it, but for one header."""
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all")
    await producer.start()
    try:
        headers = [("mqtt_topic", topic.encode()), ("received_at", received_at),
                   ("gateway", b"e2e"), ("qos", b"1")]  # fmt: skip
        await producer.send_and_wait(ns.raw_topic, value, key=topic.encode(), headers=headers)
    finally:
        await producer.stop()


def test_a_packet_over_the_brokers_limit_is_refused_at_the_door(
    ns: PipelineNamespace, device: dict[str, str], probe_of: Any
) -> None:
    """MQTT 3.1.1 (no Maximum Packet Size in its CONNACK, so the client cannot refuse it itself)."""
    gone = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.username_pw_set(device["username"], device["password"])
    client.on_disconnect = lambda *a: gone.set()
    client.connect("127.0.0.1", LOCAL_STACK.mqtt_port)
    client.loop_start()
    try:
        client.publish(device["topic_prefix"] + "senml", b"[" + b" " * 1_100_000 + b"]", qos=1)
        assert gone.wait(10), "the broker took a packet over max_packet_size"
    finally:
        client.loop_stop()
        client.disconnect()
    probe = probe_of(device["username"], device["password"])
    assert probe.connect().value == 0
    assert probe.publish(device["topic_prefix"] + "json", b'{"noise": 55}') == 0
    wait_until(lambda: _metric_rows(device["username"], "noise_laeq"), 30, "the next reading")


async def test_the_whole_path_works_over_tls(stack: Stack) -> None:
    """A device and the gateway both on 8883, verified against the CA make up generated."""
    tls_ns = PipelineNamespace()
    await tls_ns.prepare()
    sensor = f"{tls_ns.name}-tls"
    try:
        tls_ns.gateway(tls=True).start()
        tls_ns.processor().start()
        made = nakhon(
            "devices", "add", sensor, "--city", CITY, "--topic-root", tls_ns.root, "--json"
        )
        assert made.returncode == 0, made.stderr
        creds = json.loads(made.stdout)
        endpoint = MqttEndpoint(port=MQTT_TLS_PORT, tls_ca_file=LOCAL_CA)
        client = endpoint.client()
        client.username_pw_set(creds["username"], creds["password"])
        endpoint.connect(client)
        client.loop_start()
        try:
            info = client.publish(creds["topic_prefix"] + "json", b'{"pm25": 19.5}', qos=1)
            info.wait_for_publish(10)
            assert info.is_published()
        finally:
            client.disconnect()
            client.loop_stop()
        wait_until(lambda: count_rows(sensor) == 1, 30, "the reading sent over TLS")
    finally:
        nakhon("devices", "revoke", sensor)
        tls_ns.stop_all()
        with psycopg.connect(owner_dsn()) as conn:
            conn.execute("DELETE FROM readings WHERE sensor_id = %s", (sensor,))
            conn.execute("DELETE FROM sensors WHERE sensor_id = %s", (sensor,))


def test_tls_refuses_a_client_that_cannot_verify_the_broker(stack: Stack) -> None:
    """The broker's certificate verifies against the local CA only: a client using the
    system's trust store fails the handshake."""
    system = ssl.create_default_context()
    with (
        socket.create_connection(("127.0.0.1", MQTT_TLS_PORT), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        system.wrap_socket(raw, server_hostname="127.0.0.1")
    local = ssl.create_default_context(cafile=str(LOCAL_CA))
    with (
        socket.create_connection(("127.0.0.1", MQTT_TLS_PORT), timeout=5) as raw,
        local.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_a_device_can_log_in_with_its_certificate_instead_of_a_password(
    ns: PipelineNamespace, probe_of: Any, tmp_path: Path
) -> None:
    sensor = f"{ns.name}-x509"
    made = nakhon("devices", "add", sensor, "--city", CITY, "--topic-root", ns.root, "--json")
    assert made.returncode == 0, made.stderr
    prefix = json.loads(made.stdout)["topic_prefix"]
    issued = nakhon("devices", "certificate", sensor, "--out", str(tmp_path))
    assert issued.returncode == 0, issued.stderr
    crt, key = tmp_path / f"{sensor}.crt", tmp_path / f"{sensor}.key"
    assert key.stat().st_mode & 0o777 == 0o600
    device = probe_of(None, None, port=MQTT_X509_PORT, certificate=(crt, key))
    assert device.connect().value == 0
    assert device.publish(prefix + "json", b'{"pm25": 21.0}') == 0
    assert device.publish(ns.topic(CITY, f"{ns.name}-victim", "json"), b'{"pm25": 1}') == 135
    wait_until(lambda: count_rows(sensor) == 1, 30, "the reading of the certificate login")
    # Revoked: disconnected at once, and its certificate opens nothing any more.
    assert nakhon("devices", "revoke", sensor).returncode == 0
    assert device.disconnected.wait(10)
    again = probe_of(None, None, port=MQTT_X509_PORT, certificate=(crt, key))
    again.connect()
    assert again.publish(prefix + "json", b'{"pm25": 22.0}') == NOT_AUTHORIZED
    assert count_rows(sensor) == 1


def test_the_certificate_listener_refuses_a_client_without_one(stack: Stack) -> None:
    local = ssl.create_default_context(cafile=str(LOCAL_CA))
    # TLS 1.3 sends the refusal after the handshake: the first read fails.
    with (
        socket.create_connection(("127.0.0.1", MQTT_X509_PORT), timeout=5) as raw,
        local.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        tls.sendall(b"\x10\x00")
        if not tls.recv(1):
            raise ConnectionResetError("closed without a byte")
