"""docker-compose.yml runs what the local stack runs.

Docker cannot run here, so this checks the file's structure against the local
stack's scripts (deploy/local/services/*.sh) and Nakhon's settings: the same
services and commands, NAKHON_* variables that Settings knows and that differ
from the local defaults only in the host names, the same Kafka topics, broker
settings and Prometheus jobs.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from nakhon.config import Settings
from nakhon.local_stack import LOCAL_STACK
from nakhon.service_runner import run_until_signal

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "deploy" / "local" / "services"
GATEWAY_SH = REPO / "deploy" / "compose" / "gateway.sh"

Json = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> Json:
    data: Json = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: Json) -> dict[str, Json]:
    found: dict[str, Json] = compose["services"]
    return found


def local_stack_shell(command: str, env: dict[str, str] | None = None) -> str:
    """What ``command`` prints after sourcing the local stack's scripts (as stack.sh does)."""
    with tempfile.TemporaryDirectory() as state:
        return subprocess.run(
            ["bash", "-c", f'source "{LOCAL.parent}/lib.sh"; '
             f'for f in "{LOCAL}"/*.sh; do source "$f"; done; {command}'],
            capture_output=True, text=True, check=True,
            env={"PATH": "/usr/bin:/bin", "NAKHON_STATE_DIR": state, **(env or {})},
        ).stdout  # fmt: skip


def local_nakhon_services(env: dict[str, str] | None = None) -> list[str]:
    """The programs deploy/local/services/nakhon.sh runs (gateway, processor-2, ...)."""
    names = local_stack_shell('printf "%s\\n" "${NAKHON_SERVICES[@]%%:*}"', env)
    return names.split()


def local_heredoc(script: str) -> str:
    """The configuration file a local service script writes (its <<CONF heredoc)."""
    m = re.search(r"<<CONF\n(.*?)\nCONF\n", (LOCAL / script).read_text(), re.S)
    assert m
    return m.group(1)


def default_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    import os

    for name in list(os.environ):
        if name.startswith("NAKHON_"):
            monkeypatch.delenv(name)
    return Settings()


def settings_from(env: Json, monkeypatch: pytest.MonkeyPatch) -> Settings:
    default_settings(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return Settings()


def known_variables() -> set[str]:
    names = {"NAKHON_LOG_LEVEL", "NAKHON_ENV_FILE"}
    for group, spec in Settings.model_fields.items():
        model = spec.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            names |= {f"NAKHON_{group}_{f}".upper() for f in model.model_fields}
    return names


NAKHON_SERVICES = ["migrate", *local_nakhon_services(), "simulator"]


def test_every_service_is_there(services: dict[str, Json]) -> None:
    assert set(services) == {
        "broker-init",
        "db-init",
        "mosquitto",
        "kafka",
        "kafka-init",
        "timescaledb",
        "prometheus",
        "grafana",
        *NAKHON_SERVICES,
    }


def test_local_stack_runs_the_services_compose_runs() -> None:
    assert {"gateway", "processor", "api"} <= set(local_nakhon_services())


@pytest.mark.parametrize("name", [*local_nakhon_services(), "migrate"])
def test_nakhon_service_runs_the_local_command(services: dict[str, Json], name: str) -> None:
    service = services[name]
    assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    # The local stack runs `nakhon NAME` with no arguments (NAKHON_* only).
    assert service["command"] == [name]


def test_image_runs_nakhon() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["nakhon"]' in dockerfile
    assert re.search(r"^USER nakhon$", dockerfile, re.M), "the services must not run as root"


def test_every_service_restarts_and_long_running_ones_are_checked(
    services: dict[str, Json],
) -> None:
    for name, service in services.items():
        assert "restart" in service, name
        one_shot = name in {"migrate", "kafka-init", "broker-init", "db-init"}
        assert (service["restart"] == "no") == one_shot, name
    for name in (
        "mosquitto",
        "kafka",
        "timescaledb",
        "gateway",
        "processor",
        "api",
        "prometheus",
        "grafana",
    ):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name


# The three ways to run the services (compose, the local stack's supervisord,
# the systemd examples) restart them after a crash and give them the same time
# to drain after SIGTERM, more than the services' own grace.
DRAIN_GRACE_S: float = inspect.signature(run_until_signal).parameters["grace_s"].default


def duration_s(text: str | int) -> float:
    """A compose or systemd duration ("30s", "1m", "30") in seconds."""
    m = re.fullmatch(r"(\d+)\s*(ms|s|min|m)?", str(text))
    assert m, text
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "min": 60, "m": 60, None: 1}[m.group(2)]


def supervisor_program() -> dict[str, str]:
    """The settings of every [program:...] deploy/local/services/supervisor.sh writes."""
    script = (LOCAL / "supervisor.sh").read_text()
    block = re.search(r"\n\[program:\$name\]\n(.*?)\nCONF\n", script, re.S)
    assert block
    settings = dict(line.split("=", 1) for line in block.group(1).splitlines())
    for variable, value in re.findall(r"^(SUPERVISOR_[A-Z_]+)=(\d+)$", script, re.M):
        settings = {k: v.replace(f"${variable}", value) for k, v in settings.items()}
    return settings


def systemd_unit(name: str) -> dict[str, list[str]]:
    """deploy/systemd/nakhon-NAME.service: each setting's values, in order."""
    unit: dict[str, list[str]] = {}
    for line in (REPO / "deploy" / "systemd" / f"nakhon-{name}.service").read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            unit.setdefault(key, []).append(value)
    return unit


def test_long_running_services_restart_and_have_time_to_drain(services: dict[str, Json]) -> None:
    for name, service in services.items():
        assert service["restart"] in ("no", "unless-stopped", "on-failure"), name
    assert services["simulator"]["restart"] == "on-failure"
    for name in local_nakhon_services():
        assert services[name]["restart"] == "unless-stopped", name
        assert duration_s(services[name]["stop_grace_period"]) > DRAIN_GRACE_S, name


def test_the_local_supervisor_restarts_and_drains_like_compose(services: dict[str, Json]) -> None:
    program = supervisor_program()
    assert program["autorestart"] == "true"
    assert int(program["startsecs"]) > 0 and int(program["startretries"]) > 0
    assert program["stopsignal"] == "TERM"
    assert program["stopasgroup"] == program["killasgroup"] == "true"
    grace = duration_s(services["gateway"]["stop_grace_period"])
    assert int(program["stopwaitsecs"]) == grace > DRAIN_GRACE_S
    assert program["stdout_logfile"].endswith("/$file.log")  # .nakhon/logs/nakhon-<name>.log


def test_a_systemd_unit_for_every_local_service() -> None:
    units = {p.name for p in (REPO / "deploy" / "systemd").glob("*.service")}
    assert units == {f"nakhon-{name}.service" for name in local_nakhon_services()}


@pytest.mark.parametrize("name", local_nakhon_services())
def test_systemd_units_restart_and_drain_like_compose(services: dict[str, Json], name: str) -> None:
    unit = systemd_unit(name)
    assert unit["ExecStart"] == [f"/opt/nakhon/venv/bin/nakhon {name}"]
    assert unit["Restart"] == ["on-failure"]
    assert duration_s(unit["RestartSec"][0]) > 0
    assert int(unit["StartLimitBurst"][0]) > 0  # a service failing at start is given up
    assert unit["KillSignal"] == ["SIGTERM"]
    grace = duration_s(services[name]["stop_grace_period"])
    assert duration_s(unit["TimeoutStopSec"][0]) == grace > DRAIN_GRACE_S
    assert unit["EnvironmentFile"][0] == "/etc/nakhon/nakhon.env"
    assert unit["EnvironmentFile"][1:] == [f"-/etc/nakhon/{name}.env"]
    assert unit["User"] != ["root"]


@pytest.mark.parametrize(
    ("name", "port"),
    [
        ("gateway", "gateway.metrics_port"),
        ("processor", "processor.metrics_port"),
        ("api", "api.port"),
    ],
)
def test_health_checks_ask_readyz_on_the_configured_port(
    services: dict[str, Json], name: str, port: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(services[name]["environment"], monkeypatch)
    group, field = port.split(".")
    number = getattr(getattr(settings, group), field)
    assert f"http://127.0.0.1:{number}/readyz" in " ".join(services[name]["healthcheck"]["test"])


@pytest.mark.parametrize("name", NAKHON_SERVICES)
def test_environment_is_the_local_stacks_with_service_names(
    services: dict[str, Json], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env: Json = services[name].get("environment", {})
    # Besides NAKHON_*, only the gateway's replica wrapper has a variable of its own.
    wrapper = {"GATEWAY_SHARE_GROUP"} if name == "gateway" else set()
    env = {k: v for k, v in env.items() if k not in wrapper}
    assert set(env) <= known_variables(), set(env) - known_variables()
    local = default_settings(monkeypatch)
    ours = settings_from(env, monkeypatch)
    # Host names are the compose services'; ports, topics, groups and
    # credentials are the local stack's defaults.
    if "NAKHON_MQTT_HOST" in env:
        assert ours.mqtt.host == "mosquitto"
    assert ours.mqtt.model_dump(exclude={"host"}) == local.mqtt.model_dump(exclude={"host"})
    if "NAKHON_KAFKA_BOOTSTRAP_SERVERS" in env:
        local_port = local.kafka.bootstrap_servers.rsplit(":", 1)[1]
        assert ours.kafka.bootstrap_servers == f"kafka:{local_port}"
    assert ours.kafka.model_dump(exclude={"bootstrap_servers"}) == local.kafka.model_dump(
        exclude={"bootstrap_servers"}
    )
    # Each service has its own role's DSN (docs/security.md, "Database roles").
    roles = {
        "NAKHON_DB_DSN": "nakhon_owner",
        "NAKHON_DB_PROCESSOR_DSN": "nakhon_writer",
        "NAKHON_DB_MAINTAIN_DSN": "nakhon_writer",
        "NAKHON_DB_API_DSN": "nakhon_reader",
    }
    local_dsn = urlsplit(local.db.dsn.get_secret_value())
    for variable, role in roles.items():
        if variable in env:
            # The password is a ${...} of .env, which urlsplit cannot take apart.
            m = re.fullmatch(
                r"postgresql://([^:]+):(\$\{[^}]+\})@([^:/]+):(\d+)(/\w+)", env[variable]
            )
            assert m, f"{variable}: not a DSN with its password from .env"
            assert (m.group(1), m.group(3)) == (role, "timescaledb"), variable
            assert (int(m.group(4)), m.group(5)) == (local_dsn.port, local_dsn.path), variable
    assert ours.gateway.metrics_port == local.gateway.metrics_port
    # Health servers listen beyond loopback in a container, for Prometheus.
    exclude = {"metrics_host"}
    assert ours.processor.model_dump(exclude=exclude) == local.processor.model_dump(exclude=exclude)
    if name in ("gateway", "processor"):
        assert getattr(ours, name).metrics_host == "0.0.0.0"
    assert ours.api.model_dump(exclude={"host"}) == local.api.model_dump(exclude={"host"})
    if name == "api":
        assert ours.api.host == "0.0.0.0"  # reachable from outside the container


def test_services_talking_to_a_backend_are_told_where_it_is(services: dict[str, Json]) -> None:
    needs = {
        "gateway": {"NAKHON_MQTT_HOST", "NAKHON_KAFKA_BOOTSTRAP_SERVERS"},
        "processor": {"NAKHON_KAFKA_BOOTSTRAP_SERVERS", "NAKHON_DB_PROCESSOR_DSN"},
        "api": {"NAKHON_DB_API_DSN"},
        "maintain": {"NAKHON_DB_MAINTAIN_DSN"},
        "migrate": {"NAKHON_DB_DSN"},
        "simulator": {"NAKHON_MQTT_HOST"},
    }
    for name, variables in needs.items():
        assert variables <= set(services[name]["environment"]), name


def test_start_order_waits_for_what_each_service_needs(services: dict[str, Json]) -> None:
    def waits(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in services[name]["depends_on"].items()}

    assert waits("migrate") == {"db-init": "service_completed_successfully"}
    assert waits("db-init") == {"timescaledb": "service_healthy"}
    assert waits("gateway") == {
        "mosquitto": "service_healthy",
        "kafka-init": "service_completed_successfully",
    }
    assert waits("processor") == {
        "kafka-init": "service_completed_successfully",
        "migrate": "service_completed_successfully",
    }
    assert waits("api")["migrate"] == "service_completed_successfully"
    assert waits("kafka-init") == {"kafka": "service_healthy"}


def test_kafka_topics_and_partitions_are_the_local_stacks(services: dict[str, Json]) -> None:
    script = (LOCAL / "kafka.sh").read_text()
    topics_m = re.search(r"KAFKA_TOPICS=\(([^)]*)\)", script)
    partitions_m = re.search(r"KAFKA_PARTITIONS=\"\$\{NAKHON_KAFKA_PARTITIONS:-(\d+)\}\"", script)
    assert topics_m and partitions_m
    init = services["kafka-init"]["command"][0]
    loop = re.search(r"for t in ([^;]*);", init)
    assert loop and loop.group(1).split() == topics_m.group(1).split()
    assert f"--partitions {partitions_m.group(1)}" in init
    env = services["kafka"]["environment"]
    assert str(env["KAFKA_NUM_PARTITIONS"]) == partitions_m.group(1)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, one node
    settings = Settings()
    assert {
        settings.kafka.raw_topic,
        settings.kafka.readings_topic,
        settings.kafka.deadletter_topic,
    } == set(topics_m.group(1).split())


def test_mosquitto_is_configured_like_the_local_broker() -> None:
    def settings(text: str) -> set[str]:
        # Paths and listeners differ by design (TLS is the operator's to mount in compose).
        skip = (
            "#",
            "listener",
            "persistence_location",
            "user",
            "plugin",
            "cafile",
            "certfile",
            "keyfile",
            "require_certificate",
            "use_identity_as_username",
        )
        return {line.strip() for line in text.splitlines() if line.strip()} - {
            line.strip() for line in text.splitlines() if line.strip().startswith(skip)
        }

    ours = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert settings(ours) == settings(local_heredoc("mosquitto.sh"))
    assert "listener 1883 0.0.0.0" in ours
    for conf in (ours, local_heredoc("mosquitto.sh")):
        lines = conf.splitlines()
        assert "allow_anonymous false" in lines
        assert "per_listener_settings false" in lines
        assert any(
            re.match(
                r"plugin (/\S+/mosquitto_dynamic_security\.so|\$\(mosquitto_dynsec_plugin\))$", x
            )
            for x in lines
        )
        assert any(x.startswith("plugin_opt_config_file ") for x in lines)


def test_timescaledb_is_the_community_edition_on_the_local_postgresql(
    services: dict[str, Json],
) -> None:
    lib = (REPO / "deploy" / "local" / "lib.sh").read_text()
    version = re.search(r"^PG_VERSION=(\d+)$", lib, re.M)
    assert version
    image = services["timescaledb"]["image"]
    assert image.startswith("timescale/timescaledb:")
    assert image.endswith(f"-pg{version.group(1)}")
    assert "-oss" not in image  # the -oss images are the Apache-only edition
    env = services["timescaledb"]["environment"]
    dsn = urlsplit(Settings().db.dsn.get_secret_value())
    assert env["POSTGRES_DB"] == dsn.path.lstrip("/")
    # The superuser initialises only; its password comes from .env.
    assert env["POSTGRES_USER"] == "postgres"
    assert env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_no_service_gets_more_database_rights_than_its_job(services: dict[str, Json]) -> None:
    owners = [n for n, s in services.items() if "nakhon_owner" in str(s.get("environment", {}))]
    assert sorted(owners) == ["db-init", "migrate"]
    assert services["migrate"]["depends_on"] == {
        "db-init": {"condition": "service_completed_successfully"}
    }
    assert services["grafana"]["environment"]["NAKHON_GRAFANA_DB_USER"] == "nakhon_reader"
    example = (REPO / ".env.example").read_text()
    for variable in re.findall(r"\$\{([A-Z_]+):\?", (REPO / "docker-compose.yml").read_text()):
        assert f"{variable}=" in example, variable


def scrape_targets(config: Json) -> dict[str, list[str]]:
    """Each job's targets: ``host:port`` of its static targets and of its DNS names."""
    targets: dict[str, list[str]] = {}
    for job in config["scrape_configs"]:
        found = [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        found += [f"{n}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for n in sd["names"]]
        targets[job["job_name"]] = found
    return targets


def test_compose_prometheus_finds_every_replica_of_a_scaled_stage() -> None:
    """A/DNS discovery: Docker's DNS answers a service's name with every replica."""
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for stage in ("gateway", "processor"):
        assert "static_configs" not in jobs[stage], f"{stage}: a static target reaches one replica"
        [sd] = jobs[stage]["dns_sd_configs"]
        assert sd["type"] == "A"


def test_prometheus_scrapes_every_stage_in_compose_and_locally(services: dict[str, Json]) -> None:
    settings = Settings()
    ports = {
        "gateway": settings.gateway.metrics_port,
        "processor": settings.processor.metrics_port,
        "api": settings.api.port,
    }
    compose_config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    local_config = yaml.safe_load(local_stack_shell("prometheus_config"))
    compose_targets, local_targets = scrape_targets(compose_config), scrape_targets(local_config)
    for job, port in ports.items():
        assert compose_targets[job] == [f"{job}:{port}"]
        assert local_targets[job] == [f"127.0.0.1:{port}"]
    assert set(compose_targets) == set(local_targets)
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]


def test_the_local_stack_runs_and_scrapes_as_many_gateways_and_processors_as_asked() -> None:
    env = {"NAKHON_GATEWAYS": "2", "NAKHON_PROCESSORS": "3"}
    assert local_nakhon_services(env) == [
        "gateway", "gateway-2", "processor", "processor-2", "processor-3", "api", "maintain",
    ]  # fmt: skip
    targets = scrape_targets(yaml.safe_load(local_stack_shell("prometheus_config", env)))
    gateway, processor = LOCAL_STACK.gateway_metrics_port, LOCAL_STACK.processor_metrics_port
    assert targets["gateway"] == [f"127.0.0.1:{gateway}", f"127.0.0.1:{gateway + 10}"]
    assert targets["processor"] == [f"127.0.0.1:{processor + 10 * i}" for i in range(3)]
    # Each program's own /metrics port, and a second gateway's own broker login.
    program_env = local_stack_shell(
        'for n in gateway-2 processor-3; do nakhon_program_env "$n"; done', env
    ).splitlines()
    assert f'NAKHON_GATEWAY_METRICS_PORT="{gateway + 10}"' in program_env[0]
    assert "/secrets/gateway-2.env" in program_env[0]
    assert f'NAKHON_PROCESSOR_METRICS_PORT="{processor + 20}"' in program_env[1]


def test_the_local_stack_refuses_more_processors_than_partitions() -> None:
    with pytest.raises(subprocess.CalledProcessError) as refused:
        local_stack_shell("true", {"NAKHON_PROCESSORS": "7"})
    assert "NAKHON_PROCESSORS=7: use 1 to 6" in refused.value.stderr


def test_grafana_gets_provisioning_and_every_variable_it_reads(services: dict[str, Json]) -> None:
    grafana = services["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    datasources = (REPO / "deploy/grafana/provisioning/datasources/nakhon.yml").read_text()
    used = set(re.findall(r"\$(NAKHON_GRAFANA_[A-Z_]+)", datasources))
    assert used and used <= set(grafana["environment"])
    assert grafana["environment"]["NAKHON_GRAFANA_DB_HOST"] == "timescaledb:5432"
    assert grafana["environment"]["NAKHON_GRAFANA_PROMETHEUS_URL"] == "http://prometheus:9090"


def test_simulator_is_behind_a_profile(services: dict[str, Json]) -> None:
    simulator = services["simulator"]
    assert simulator["profiles"] == ["simulator"]
    assert simulator["command"][0] == "simulate"
    assert simulator["command"][simulator["command"].index("--sensors") + 1] == "300"
    for name, service in services.items():
        if name != "simulator":
            assert "profiles" not in service, name


def test_the_broker_starts_closed_with_generated_credentials(services: dict[str, Json]) -> None:
    init = services["broker-init"]
    assert init["command"][:2] == ["broker", "init"]
    assert services["mosquitto"]["depends_on"]["broker-init"] == {
        "condition": "service_completed_successfully"
    }
    secrets = "nakhon-secrets:/run/nakhon"
    assert f"{secrets}:ro" in services["gateway"]["volumes"]
    # The gateway wrapper provisions each replica with the admin password of
    # broker-init's env file (deploy/compose/gateway.sh), read-only.
    env_file = init["command"][init["command"].index("--env-file") + 1]
    assert env_file.startswith("/run/nakhon/")
    assert f"admin_env=${{GATEWAY_ADMIN_ENV_FILE:-{env_file}}}" in GATEWAY_SH.read_text()
    # Only the services that need an MQTT login see the secrets.
    for name in ("processor", "api", "maintain", "migrate"):
        assert not any("nakhon-secrets" in v for v in services[name].get("volumes", [])), name


def test_only_mqtt_and_the_api_are_published(services: dict[str, Json]) -> None:
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert published == {"mosquitto": ["1883:1883"], "api": ["8080:8080"]}
    ops = yaml.safe_load((REPO / "docker-compose.ops.yml").read_text())["services"]
    for name, service in ops.items():
        assert all(p.startswith("127.0.0.1:") for p in service["ports"]), name


def test_no_default_admin_password_and_no_lifecycle_api(services: dict[str, Json]) -> None:
    grafana_password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert grafana_password.startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert not any("lifecycle" in arg for arg in services["prometheus"]["command"])
