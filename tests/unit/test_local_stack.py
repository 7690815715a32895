"""The local stack's ports are defined once (nakhon/local_stack.env) and read everywhere."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from nakhon.config import Settings
from nakhon.local_stack import ENV_FILE, LOCAL_STACK, read_env

REPO = Path(__file__).resolve().parents[2]


def test_the_settings_defaults_are_the_local_stacks_ports() -> None:
    settings = Settings()
    assert settings.mqtt.port == LOCAL_STACK.mqtt_port
    assert settings.kafka.bootstrap_servers == f"127.0.0.1:{LOCAL_STACK.kafka_port}"
    assert settings.db.dsn.get_secret_value().endswith(
        f"@127.0.0.1:{LOCAL_STACK.pg_port}/{LOCAL_STACK.pg_database}"
    )
    assert settings.gateway.metrics_port == LOCAL_STACK.gateway_metrics_port
    assert settings.processor.metrics_port == LOCAL_STACK.processor_metrics_port
    assert settings.api.port == LOCAL_STACK.api_port


def test_the_stack_scripts_read_the_same_file_and_define_no_port_of_their_own() -> None:
    scripts = sorted((REPO / "deploy" / "local").rglob("*.sh"))
    for script in scripts:
        for line in script.read_text().splitlines():
            assert not re.match(r"\s*[A-Z_]*PORT=\d", line), f"{script.name}: {line}"
    # What the scripts see after sourcing lib.sh is what Python reads.
    names = list(read_env(ENV_FILE))
    printed = " ".join(f'"{name}=${{{name}}}"' for name in names)
    shell = subprocess.run(
        ["bash", "-c", f'source "{REPO}/deploy/local/lib.sh" >/dev/null; printf "%s\\n" {printed}'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "NAKHON_STATE_DIR": str(REPO / ".nakhon")},
    ).stdout
    assert dict(line.split("=", 1) for line in shell.splitlines()) == read_env(ENV_FILE)
    assert LOCAL_STACK.kafka_port == int(read_env(ENV_FILE)["KAFKA_PORT"])
