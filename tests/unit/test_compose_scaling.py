"""`docker compose up --scale gateway=N --scale processor=M` works without edits.

Docker cannot run here, so this reads docker-compose.yml for what breaks
replicas (a container_name, a published port, one MQTT login or client id for
all), and runs deploy/compose/gateway.sh, the gateway replicas' entrypoint,
with a stand-in for ``nakhon``: each replica must claim its own slot, login
and client id, keep them across restarts, and share one subscription group.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nakhon.config import Settings
from nakhon.env_file import read_env_file, update_env_file
from nakhon.identity.command import _gateway_env
from nakhon.identity.provision import Credentials
from nakhon.identity.roles import gateway_identity

REPO = Path(__file__).resolve().parents[2]
GATEWAY_SH = REPO / "deploy" / "compose" / "gateway.sh"
SCALED = ("gateway", "processor")

Json = dict[str, Any]


@pytest.fixture(scope="module")
def services() -> dict[str, Json]:
    found: dict[str, Json] = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    return found


def test_no_service_has_a_fixed_container_name(services: dict[str, Json]) -> None:
    for name, service in services.items():
        assert "container_name" not in service, name


@pytest.mark.parametrize("name", SCALED)
def test_scaled_services_publish_no_host_port_and_have_no_fixed_hostname(
    services: dict[str, Json], name: str
) -> None:
    service = services[name]
    assert "ports" not in service, f"{name}: a host port cannot be bound by two replicas"
    assert "hostname" not in service, f"{name}: every replica would get the same name"
    assert "deploy" not in service or "replicas" not in service["deploy"], name


def test_no_replica_identity_is_fixed_in_the_gateways_environment(
    services: dict[str, Json],
) -> None:
    env = services["gateway"]["environment"]
    # Same values in every replica: the wrapper sets these per slot.
    for variable in (
        "NAKHON_ENV_FILE",
        "NAKHON_MQTT_CLIENT_ID",
        "NAKHON_MQTT_USERNAME",
        "NAKHON_MQTT_PASSWORD",
        "NAKHON_MQTT_SHARE_GROUP",
        "NAKHON_GATEWAY_NAME",
    ):
        assert variable not in env, variable


def test_gateway_replicas_run_through_the_slot_wrapper(services: dict[str, Json]) -> None:
    gateway = services["gateway"]
    assert gateway["entrypoint"] == ["bash", "/opt/nakhon/gateway.sh"]
    assert gateway["command"] == ["gateway"]
    assert "./deploy/compose/gateway.sh:/opt/nakhon/gateway.sh:ro" in gateway["volumes"]
    # The slots' logins live in a volume the replicas share, read-write, which
    # broker-init (root) hands to the image's user.
    identities = "gateway-identities:/var/lib/nakhon/gateways"
    assert identities in gateway["volumes"]
    init = services["broker-init"]
    assert identities in init["volumes"]
    uid = re.search(r"useradd .*--uid (\d+)", (REPO / "Dockerfile").read_text())
    assert uid
    script = " ".join(init["entrypoint"])
    assert f"install -d -o {uid.group(1)} -g {uid.group(1)} -m 700 /var/lib/nakhon/gateways" in (
        script
    )
    assert 'exec nakhon "$$@"' in script  # then `nakhon broker init ...`, as before
    assert GATEWAY_SH.read_text().count("${GATEWAY_IDENTITIES:-/var/lib/nakhon/gateways}") == 1


def test_gateways_share_one_valid_subscription_group_by_default(services: dict[str, Json]) -> None:
    m = re.fullmatch(
        r"\$\{GATEWAY_SHARE_GROUP-(.+)\}", services["gateway"]["environment"]["GATEWAY_SHARE_GROUP"]
    )
    assert m, "a default group, so that scaling needs no .env either"
    group = m.group(1)
    assert "${GATEWAY_SHARE_GROUP-" + group + "}" in GATEWAY_SH.read_text()
    identity = gateway_identity("compose-1", group, ["city/#"])  # a name the broker accepts
    assert identity.subscribe_topics == [f"$share/{group}/city/#"]


def test_processors_scale_by_the_consumer_group_up_to_the_partition_count(
    services: dict[str, Json],
) -> None:
    env = services["processor"]["environment"]
    assert "NAKHON_KAFKA_CONSUMER_GROUP" not in env  # one group: every replica joins it
    init = services["kafka-init"]["command"][0]
    partitions = re.search(r"--partitions (\d+)", init)
    assert partitions and int(partitions.group(1)) >= 6
    assert Settings().kafka.consumer_group
    deploy = (REPO / "docs" / "deploy.md").read_text()
    assert f"at most {partitions.group(1)} processors" in deploy


def test_the_wrapper_recognises_the_env_file_gateways_add_writes(tmp_path: Path) -> None:
    """gateway.sh greps the slot's file for its group: the line update_env_file writes."""
    creds = Credentials("gateway:compose-1", "pw", "gateway", clientid="nakhon-gateway-x")
    path = tmp_path / "compose-1.env"
    update_env_file(path, _gateway_env(creds, "nakhon"))
    assert "NAKHON_MQTT_SHARE_GROUP=nakhon" in path.read_text().splitlines()
    update_env_file(path, _gateway_env(creds, ""))
    assert "NAKHON_MQTT_SHARE_GROUP=" in path.read_text().splitlines()


# Running the wrapper --------------------------------------------------------------

FAKE_NAKHON = r"""#!/usr/bin/env bash
# Stands in for nakhon: logs each call; `gateways add` writes a login like the
# real one; `gateway` records its settings and waits, holding the slot.
echo "$* env=${NAKHON_ENV_FILE:-} name=${NAKHON_GATEWAY_NAME:-}" >> "$FAKE_DIR/calls"
case "$1 ${2:-}" in
"gateways add")
    printf 'NAKHON_MQTT_CLIENT_ID=nakhon-gateway-%s-%s\nNAKHON_MQTT_PASSWORD=pw\n' \
        "$3" "$RANDOM$RANDOM$RANDOM" > "$7"
    printf 'NAKHON_MQTT_SHARE_GROUP=%s\nNAKHON_MQTT_USERNAME=gateway:%s\n' "$5" "$3" >> "$7"
    ;;
"gateways revoke") exit 3 ;;
"gateway ")
    cp "$NAKHON_ENV_FILE" "$FAKE_DIR/running.$NAKHON_GATEWAY_NAME"
    exec sleep 60
    ;;
esac
"""

needs_tools = pytest.mark.skipif(
    not (shutil.which("bash") and shutil.which("flock")), reason="needs bash and flock"
)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "identities").mkdir()
    nakhon = tmp_path / "nakhon"
    nakhon.write_text(FAKE_NAKHON)
    nakhon.chmod(0o755)
    yield tmp_path


class Replicas:
    def __init__(self, root: Path, group: str = "nakhon") -> None:
        self.root = root
        self.group = group
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        env = os.environ | {
            "FAKE_DIR": str(self.root),
            "NAKHON_BIN": str(self.root / "nakhon"),
            "GATEWAY_IDENTITIES": str(self.root / "identities"),
            "GATEWAY_ADMIN_ENV_FILE": str(self.root / "admin.env"),
            "GATEWAY_SHARE_GROUP": self.group,
            "GATEWAY_REFUSED_WAIT_S": "0",
        }
        with (self.root / f"stderr.{len(self.procs)}").open("wb") as err:
            proc = subprocess.Popen(["bash", str(GATEWAY_SH), "gateway"], env=env, stderr=err)
        self.procs.append(proc)
        return proc

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.root / f"stderr.{self.procs.index(proc)}").read_text()

    def running(self, count: int) -> dict[str, dict[str, str]]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            files = sorted(self.root.glob("running.*"))
            if len(files) >= count:
                time.sleep(0.1)  # the copy is complete
                return {f.name.split(".", 1)[1]: read_env_file(f) for f in files}
            time.sleep(0.05)
        raise AssertionError(f"{count} replicas did not start: {self.calls()}")

    def calls(self) -> list[str]:
        path = self.root / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def replicas(fake: Path) -> Iterator[Replicas]:
    r = Replicas(fake)
    yield r
    r.close()


@needs_tools
def test_each_replica_gets_its_own_login_and_client_id(replicas: Replicas) -> None:
    replicas.start()
    replicas.running(1)
    replicas.start()
    replicas.start()
    running = replicas.running(3)
    assert set(running) == {"compose-1", "compose-2", "compose-3"}
    client_ids = {env["NAKHON_MQTT_CLIENT_ID"] for env in running.values()}
    assert len(client_ids) == 3
    for name, env in running.items():
        assert env["NAKHON_MQTT_USERNAME"] == f"gateway:{name}"
        assert env["NAKHON_MQTT_SHARE_GROUP"] == "nakhon"
    # Provisioned with the admin's env file; the gateways run with their own only.
    adds = [c for c in replicas.calls() if c.startswith("gateways add")]
    assert len(adds) == 3
    assert all(f"env={replicas.root / 'admin.env'}" in c for c in adds)
    runs = [c for c in replicas.calls() if c.startswith("gateway ")]
    assert all("admin.env" not in c for c in runs)


@needs_tools
def test_a_restarted_replica_resumes_a_free_slots_client_id(replicas: Replicas) -> None:
    first = replicas.start()
    before = replicas.running(1)["compose-1"]
    replicas.start()
    replicas.running(2)
    replicas.stop(first)  # its lock dies with it
    for f in replicas.root.glob("running.*"):
        f.unlink()
    replicas.start()
    after = replicas.running(1)
    assert after["compose-1"]["NAKHON_MQTT_CLIENT_ID"] == before["NAKHON_MQTT_CLIENT_ID"]
    assert len([c for c in replicas.calls() if c.startswith("gateways add")]) == 2


@needs_tools
def test_a_changed_group_makes_the_slots_login_again(fake: Path) -> None:
    r = Replicas(fake, group="nakhon")
    try:
        proc = r.start()
        r.running(1)
        r.stop(proc)
        (fake / "running.compose-1").unlink()
        r.group = "city"
        r.start()
        assert r.running(1)["compose-1"]["NAKHON_MQTT_SHARE_GROUP"] == "city"
        assert [c.split()[:3] for c in r.calls() if c.startswith("gateways revoke")] == [
            ["gateways", "revoke", "compose-1"]
        ] * 2
    finally:
        r.close()


@needs_tools
def test_without_a_group_only_one_replica_may_run(fake: Path) -> None:
    r = Replicas(fake, group="")
    try:
        r.start()
        assert r.running(1)["compose-1"]["NAKHON_MQTT_SHARE_GROUP"] == ""
        second = r.start()
        assert second.wait(timeout=10) == 1
        assert "would read every message again" in r.stderr(second)
        assert not (fake / "running.compose-2").exists()
    finally:
        r.close()


@needs_tools
def test_other_commands_run_with_the_admin_env_file_and_take_no_slot(fake: Path) -> None:
    """`docker compose run --rm gateway devices add ...` (README) still works."""
    env = os.environ | {
        "FAKE_DIR": str(fake),
        "NAKHON_BIN": str(fake / "nakhon"),
        "GATEWAY_IDENTITIES": str(fake / "identities"),
        "GATEWAY_ADMIN_ENV_FILE": str(fake / "admin.env"),
    }
    cmd = ["bash", str(GATEWAY_SH), "devices", "add", "aq-1", "--city", "bangkok"]
    subprocess.run(cmd, env=env, check=True, timeout=10)
    assert (fake / "calls").read_text().splitlines() == [
        f"devices add aq-1 --city bangkok env={fake / 'admin.env'} name="
    ]
    assert not list((fake / "identities").iterdir())


@needs_tools
def test_ending_a_slots_session_takes_no_slot(fake: Path) -> None:
    """`docker compose run --rm -e NAKHON_ENV_FILE=... gateway gateway --end-session`."""
    slot_env = fake / "identities" / "compose-3.env"
    env = os.environ | {
        "FAKE_DIR": str(fake),
        "NAKHON_BIN": str(fake / "nakhon"),
        "GATEWAY_IDENTITIES": str(fake / "identities"),
        "NAKHON_ENV_FILE": str(slot_env),
    }
    subprocess.run(
        ["bash", str(GATEWAY_SH), "gateway", "--end-session"], env=env, check=True, timeout=10
    )
    assert (fake / "calls").read_text().splitlines() == [
        f"gateway --end-session env={slot_env} name="
    ]
    assert not list((fake / "identities").glob("slot-*"))
