"""The local stack's addresses, read from ``local_stack.env`` beside this module.

That file is the one definition of the ports ``make up`` listens on: the shell
scripts source it and the settings take their defaults from here, so a port is
changed in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ENV_FILE = Path(__file__).with_name("local_stack.env")
HOST = "127.0.0.1"


def read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class LocalStack:
    mqtt_port: int
    mqtt_tls_port: int
    mqtt_x509_port: int
    kafka_port: int
    kafka_controller_port: int
    kafka_scram_port: int
    pg_port: int
    pg_database: str
    prom_port: int
    gateway_metrics_port: int
    processor_metrics_port: int
    api_port: int

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def kafka_scram_bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_scram_port}"

    def dsn(self, role: str, password: str | None = None) -> str:
        """A DSN of the local database for ``role`` (password omitted unless given)."""
        auth = f"{role}:{password}" if password else role
        return f"postgresql://{auth}@{HOST}:{self.pg_port}/{self.pg_database}"


def _load() -> LocalStack:
    v = read_env(ENV_FILE)
    return LocalStack(
        mqtt_port=int(v["MQTT_PORT"]),
        mqtt_tls_port=int(v["MQTT_TLS_PORT"]),
        mqtt_x509_port=int(v["MQTT_X509_PORT"]),
        kafka_port=int(v["KAFKA_PORT"]),
        kafka_controller_port=int(v["KAFKA_CONTROLLER_PORT"]),
        kafka_scram_port=int(v["KAFKA_SCRAM_PORT"]),
        pg_port=int(v["PG_PORT"]),
        pg_database=v["PG_DATABASE"],
        prom_port=int(v["PROM_PORT"]),
        gateway_metrics_port=int(v["GATEWAY_METRICS_PORT"]),
        processor_metrics_port=int(v["PROCESSOR_METRICS_PORT"]),
        api_port=int(v["API_PORT"]),
    )


LOCAL_STACK = _load()
