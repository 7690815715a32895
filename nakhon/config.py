"""The one configuration model: every setting is an environment variable.

Variables are ``NAKHON_<GROUP>_<NAME>``, e.g. ``NAKHON_MQTT_HOST``,
``NAKHON_KAFKA_BOOTSTRAP_SERVERS``, ``NAKHON_DB_DSN``. Defaults point at the
local stack (``make up``). Settings are built in ``main()``, never at import
time, and each component receives only its own group.
"""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: MQTT filters the gateway subscribes to: the device topics and the uplinks of
#: The Things Stack v3 and ChirpStack v4 (DESIGN.md, "Wire contract").
DEFAULT_TOPIC_FILTERS = ["city/#", "v3/+/devices/+/up", "application/+/device/+/event/up"]


class MqttSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: SecretStr | None = None
    #: Stable client id: the broker keeps this gateway's persistent session under it.
    client_id: str = Field(default_factory=lambda: f"nakhon-gateway-{socket.gethostname()}")
    #: Shared-subscription group; every gateway in the group gets a share of the messages.
    share_group: str = "nakhon"
    topic_filters: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPIC_FILTERS))
    keepalive_s: int = 30
    #: Session expiry the broker honours after a disconnect (seconds).
    session_expiry_s: int = 7 * 24 * 3600


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    raw_topic: str = "nakhon.raw"
    readings_topic: str = "nakhon.readings"
    deadletter_topic: str = "nakhon.deadletter"
    consumer_group: str = "nakhon-processor"
    linger_ms: int = 5
    max_batch_bytes: int = 512 * 1024
    compression: Literal["none", "gzip", "lz4", "zstd"] = "lz4"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None


class DbSettings(BaseModel):
    dsn: SecretStr = SecretStr("postgresql://nakhon:nakhon@127.0.0.1:5432/nakhon")
    pool_min: int = 1
    pool_max: int = 4
    #: Seconds a caller waits for a pooled connection before giving up.
    pool_timeout_s: float = 10.0


class GatewaySettings(BaseModel):
    #: Name written into each record's ``gateway`` header.
    name: str = Field(default_factory=socket.gethostname)
    #: MQTT messages taken but not yet acknowledged by Kafka; past it, the
    #: gateway stops reading from the broker (backpressure).
    max_inflight: int = 10_000
    metrics_port: int = 9101


class ProcessorSettings(BaseModel):
    batch_max_records: int = 5_000
    batch_max_wait_ms: int = 200
    #: Reject metric names the catalogue does not know, instead of storing them as ``x_<name>``.
    strict_metrics: bool = False
    #: Reject readings of sensors that are not in the registry.
    strict_sensors: bool = False
    #: Readings dated further than this into the future are rejected.
    future_tolerance_s: float = 300.0
    #: Readings older than this are rejected as too old for backfill.
    backfill_horizon_days: float = 30.0
    #: City assigned to LoRaWAN devices whose topic names none (until the registry says otherwise).
    lorawan_city: str = "unknown"
    metrics_port: int = 9102
    publish_readings: bool = True


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080
    #: When set, every /v1 request must carry one of these in ``X-API-Key``.
    api_keys: list[SecretStr] = Field(default_factory=list)
    max_points: int = 10_000


class Settings(BaseSettings):
    """All of Nakhon's configuration, read from ``NAKHON_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="NAKHON_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
    )

    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    db: DbSettings = Field(default_factory=DbSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    processor: ProcessorSettings = Field(default_factory=ProcessorSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
