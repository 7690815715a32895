"""The one configuration model: every setting is an environment variable.

Variables are ``NAKHON_<GROUP>_<NAME>``, e.g. ``NAKHON_MQTT_HOST``,
``NAKHON_KAFKA_BOOTSTRAP_SERVERS``, ``NAKHON_DB_DSN``. Defaults point at the
local stack (``make up``). Settings are built in ``main()``, never at import
time, and each component receives only its own group.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nakhon.domain.catalogue import METRICS
from nakhon.env_file import read_env_file
from nakhon.local_stack import LOCAL_STACK

#: MQTT filters the gateway subscribes to: the device topics and the uplinks of
#: The Things Stack v3 and ChirpStack v4 (docs/architecture.md, "Wire contract").
DEFAULT_TOPIC_FILTERS = ["city/#", "v3/+/devices/+/up", "application/+/device/+/event/up"]

#: Topic pattern -> codec (``pattern=codec``), the wire contract of docs/architecture.md.
#: ``{city}`` and ``{sensor_id}`` capture one topic level each; see
#: ``nakhon/processors/routing.py``.
DEFAULT_ROUTES = [
    "city/{city}/{sensor_id}/senml=senml",
    "city/{city}/{sensor_id}/senml-cbor=senml-cbor",
    "city/{city}/{sensor_id}/json=json",
    "city/{city}/{sensor_id}/ngsi=ngsi",
    "city/{city}/{sensor_id}/position=position",
    "v3/{app}/devices/{sensor_id}/up=tts-v3",
    "application/{app}/device/{sensor_id}/event/up=chirpstack-v4",
]


#: Where ``make up`` writes the local stack's generated credentials
#: (``NAKHON_*`` lines, mode 600); read when present, relative to the working
#: directory, unless ``NAKHON_ENV_FILE`` names another file.
LOCAL_ENV_FILE = Path(".nakhon/secrets/local.env")


class MqttSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = LOCAL_STACK.mqtt_port
    #: The gateway's own credentials (``nakhon gateways add``): no anonymous clients.
    username: str | None = None
    password: SecretStr | None = None
    #: Stable client id: the broker keeps this gateway's persistent session under it.
    #: Give each gateway the random one ``nakhon gateways add`` generated: the
    #: broker accepts the gateway's username only with it.
    client_id: str = Field(default_factory=lambda: f"nakhon-gateway-{socket.gethostname()}")
    #: Password of the broker's administrator (``admin:nakhon``), for ``nakhon devices``,
    #: ``nakhon bridges`` and ``nakhon gateways``.
    admin_password: SecretStr | None = None
    #: TLS: the CA that signed the broker's certificate (set it, and port 8883, to use TLS).
    tls_ca_file: Path | None = None
    #: TLS: a client certificate and its key, for a broker that asks for one.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Shared-subscription group: every gateway in the group gets a share of the
    #: messages. Empty (the default): the gateway subscribes to its filters
    #: themselves, which Mosquitto 2.0 keeps in its persistent session across a
    #: broker restart; it does not keep shared subscriptions, so messages
    #: published between a restart and the gateway's reconnect would be lost.
    #: Several gateways on Mosquitto: give each disjoint NAKHON_MQTT_TOPIC_FILTERS.
    #: Set a group only on a broker that persists shared subscriptions.
    share_group: str = ""
    topic_filters: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPIC_FILTERS))
    keepalive_s: int = 30
    #: Session expiry the broker honours after a disconnect (seconds).
    session_expiry_s: int = 7 * 24 * 3600
    #: JSON object ``{"city": "broker.env"}``: the cities whose devices connect
    #: to another MQTT broker than this one (docs/deploy.md, "The city-to-broker
    #: map"), each named by an env file of ``NAKHON_MQTT_*`` lines (host,
    #: port, admin password, TLS CA) that ``nakhon devices`` uses to provision
    #: that city's devices there. Cities not named use this broker.
    city_brokers: dict[str, Path] = Field(default_factory=dict)

    def for_city(self, city: str) -> MqttSettings:
        """The settings of the broker ``city``'s devices connect to.

        These settings, with the ``NAKHON_MQTT_*`` lines of the city's broker
        file (``city_brokers``) over them; these when the city has none.
        """
        path = self.city_brokers.get(city)
        if path is None:
            return self
        if not path.is_file():
            raise ValueError(f"NAKHON_MQTT_CITY_BROKERS: no file {path} (the broker of {city})")
        prefix = "NAKHON_MQTT_"
        overrides: dict[str, object] = {}
        for key, value in read_env_file(path).items():
            if key.startswith(prefix) and key != f"{prefix}CITY_BROKERS":
                # Lists and objects (topic filters) are JSON, as in the environment.
                name = key.removeprefix(prefix).lower()
                overrides[name] = json.loads(value) if value.startswith(("[", "{")) else value
        return MqttSettings.model_validate(self.model_dump() | overrides)


class KafkaSettings(BaseModel):
    bootstrap_servers: str = LOCAL_STACK.kafka_bootstrap
    raw_topic: str = "nakhon.raw"
    readings_topic: str = "nakhon.readings"
    deadletter_topic: str = "nakhon.deadletter"
    consumer_group: str = "nakhon-processor"
    #: Whole days Kafka keeps ``raw_topic`` and ``deadletter_topic`` (``retention.ms``,
    #: set when ``make up`` creates them): raw longer than the 30-day backfill
    #: horizon, so ``nakhon replay raw`` covers it; dead letters long enough to
    #: fix a cause and ``nakhon replay deadletters``.
    raw_retention_days: int = Field(default=35, ge=1)
    deadletter_retention_days: int = Field(default=90, ge=1)
    #: The longest the processor may go without polling before the group counts it
    #: dead and rebalances (aiokafka's ``max_poll_interval_ms``). A batch that waits
    #: (the database away) keeps polling with its partitions paused, so it does not
    #: need raising for outages; a test lowers it to see that.
    max_poll_interval_ms: int = Field(default=300_000, gt=0)
    linger_ms: int = 5
    max_batch_bytes: int = 512 * 1024
    compression: Literal["none", "gzip", "lz4", "zstd"] = "lz4"
    #: ``SASL_SSL`` (SCRAM over TLS) for a broker outside this host; ``PLAINTEXT``
    #: only on loopback. See docs/security.md, "Kafka".
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    #: Required with ``SASL_*``; ignored (refused, if set) otherwise.
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    #: Used only with ``SASL_*``: the local stack keeps its generated SCRAM user
    #: here even while the services connect in plaintext.
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: TLS (``SSL``/``SASL_SSL``): the CA that signed the brokers' certificates;
    #: unset, the system's CAs are trusted.
    ssl_ca_file: Path | None = None
    #: TLS: a client certificate (PEM) and its key, for brokers that ask for one.
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    #: TLS: the password of an encrypted ``ssl_key_file``.
    ssl_key_password: SecretStr | None = None


#: The services that connect to TimescaleDB, each with its own DSN in :class:`DbSettings`.
DbService = Literal["processor", "maintain", "api"]


class MissingDsnError(RuntimeError):
    """A service's DSN is not configured (there is no fallback to the owner's)."""


class DbSettings(BaseModel):
    """Where each part of Nakhon connects to TimescaleDB, and as which role.

    One DSN per service, so each logs in with only the rights its job needs
    (docs/security.md, "Database roles"):

    - ``dsn`` (``NAKHON_DB_DSN``): the schema owner, ``nakhon_owner``, for
      ``nakhon migrate`` and the operator's commands (cities, sensors, devices,
      api-keys); never a service's.
    - ``processor_dsn`` (``NAKHON_DB_PROCESSOR_DSN``) and ``maintain_dsn``
      (``NAKHON_DB_MAINTAIN_DSN``): ``nakhon_writer``.
    - ``api_dsn`` (``NAKHON_DB_API_DSN``): ``nakhon_reader``.

    ``make up`` generates the roles' passwords and writes all four into
    ``.nakhon/secrets/local.env`` (``nakhon db init-roles``). A service whose
    DSN is unset refuses to start rather than quietly run as the owner.
    """

    dsn: SecretStr = SecretStr(LOCAL_STACK.dsn("nakhon_owner"))
    processor_dsn: SecretStr | None = None
    maintain_dsn: SecretStr | None = None
    api_dsn: SecretStr | None = None
    pool_min: int = 1
    pool_max: int = 4
    #: Seconds a caller waits for a pooled connection before giving up.
    pool_timeout_s: float = 10.0

    def service_dsn(self, service: DbService) -> str:
        """The DSN ``service`` connects with; :class:`MissingDsnError` if it is unset."""
        value = {
            "processor": self.processor_dsn,
            "maintain": self.maintain_dsn,
            "api": self.api_dsn,
        }[service]
        if value is None:
            raise MissingDsnError(
                f"NAKHON_DB_{service.upper()}_DSN is not set: the {service} connects with its "
                "own role, never the owner's (make up writes it to .nakhon/secrets/local.env)"
            )
        return value.get_secret_value()


class GatewaySettings(BaseModel):
    #: Name written into each record's ``gateway`` header.
    name: str = Field(default_factory=socket.gethostname)
    #: MQTT messages taken but not yet acknowledged by Kafka; past it, the
    #: gateway stops reading from the broker (backpressure).
    max_inflight: int = 10_000
    #: QoS 0 messages taken but not yet handed to Kafka, at most. MQTT 5 Receive
    #: Maximum (``max_inflight``) bounds only QoS 1 and 2, so while Kafka is slow
    #: or away the broker keeps sending QoS 0 messages: past this many waiting,
    #: further ones are dropped (QoS 0 is at most once) and counted in
    #: ``nakhon_gateway_qos0_dropped_total``, so memory stays bounded.
    max_queued_qos0: int = 10_000
    #: Address of /metrics, /healthz and /readyz (0.0.0.0 to let other hosts scrape).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = LOCAL_STACK.gateway_metrics_port


class ProcessorSettings(BaseModel):
    #: JSON list of ``pattern=codec`` routes, tried in order.
    routes: list[str] = Field(default_factory=lambda: list(DEFAULT_ROUTES))
    batch_max_records: int = 5_000
    batch_max_wait_ms: int = 200
    #: Reject metric names the catalogue does not know, instead of storing them as ``x_<name>``.
    strict_metrics: bool = False
    #: JSON object ``{"device's name": "catalogue metric"}``: the operator's own
    #: aliases, tried before the catalogue's (names matched as the catalogue's are,
    #: case and punctuation ignored). Every target must be a catalogue metric.
    metric_aliases: dict[str, str] = Field(default_factory=dict)
    #: Reject readings of sensors that are not in the registry (``nakhon sensors import``).
    strict_sensors: bool = False
    #: Seconds between reloads of the sensor registry snapshot used for enrichment.
    registry_refresh_s: float = 60.0
    #: Readings dated further than this into the future are rejected.
    future_tolerance_s: float = 300.0
    #: Readings older than this are rejected as too old for backfill.
    backfill_horizon_days: float = 30.0
    #: City assigned to LoRaWAN devices whose topic names none (until the registry says otherwise).
    lorawan_city: str = "unknown"
    #: Address of /metrics, /healthz and /readyz (0.0.0.0 to let other hosts scrape).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = LOCAL_STACK.processor_metrics_port
    publish_readings: bool = True

    @field_validator("metric_aliases")
    @classmethod
    def _aliases_name_catalogue_metrics(cls, aliases: dict[str, str]) -> dict[str, str]:
        unknown = sorted({target for target in aliases.values() if target not in METRICS})
        if unknown:
            raise ValueError(
                f"NAKHON_PROCESSOR_METRIC_ALIASES: {', '.join(map(repr, unknown))} "
                f"not in the metric catalogue (one of: {', '.join(sorted(METRICS))})"
            )
        if any(not name.strip() for name in aliases):
            raise ValueError("NAKHON_PROCESSOR_METRIC_ALIASES: an empty device name")
        return aliases


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = LOCAL_STACK.api_port
    #: Serve /v1 without a key (open data), with only ``public_scopes``. Off: a
    #: key from ``nakhon api-keys create`` is required, and ``nakhon api``
    #: refuses to start while no key is active.
    public: bool = False
    #: Comma-separated scopes of keyless requests in public mode (never vehicles by default).
    public_scopes: str = "readings,aqi,sensors"
    #: The local stack's own key (``make up`` writes it to the env file): the
    #: key ``make bench`` and the demo's hints use; the server never reads it.
    local_key: SecretStr | None = None
    #: Seconds a key (or its revocation) is cached per process.
    key_cache_s: float = 5.0
    #: Per key (or, in public mode, per client address): sustained requests per second ...
    rate_per_s: float = 20.0
    #: ... and the burst allowed above that rate (token bucket); past it, 429.
    rate_burst: int = 60
    #: Points (series x buckets) one /v1/series response may hold; past it, 400.
    max_points: int = 10_000
    #: Longest [start, end) of /v1/series and /v1/vehicles/{id}/track; past it, 400.
    max_range_days: float = 366.0
    #: Requests to the heavy routes (series, aqi, vehicles) served at once; the
    #: pool keeps its other connections for cheap ones. 0: pool_max - 1.
    heavy_requests: int = 0
    #: Requests allowed to queue for a pooled connection before 503s start.
    pool_max_waiting: int = 64
    #: Server-side cap on one query, so a heavy request cannot hog the database.
    statement_timeout_s: float = 10.0
    #: Seconds ``nakhon api`` waits at start for the database (and its
    #: migrated ``api_keys``) to answer its key check before giving up (exit 3).
    startup_wait_s: float = 30.0
    #: Seconds uvicorn gives in-flight requests to finish on SIGTERM.
    shutdown_grace_s: float = 10.0


class RetentionSettings(BaseModel):
    """How long each table keeps its rows, and how often rollups are refreshed.

    Raw data can go long before its rollups: charts over months only read
    ``readings_1h``. Keep ``readings_1m_days`` at least as long as the
    processors' backfill horizon, so a late reading can still be re-aggregated.
    """

    readings_days: float = 30.0
    positions_days: float = 30.0
    readings_1m_days: float = 90.0
    readings_1h_days: float = 5 * 365.0
    #: Community edition only: compress raw chunks older than this.
    compress_after_days: float = 7.0
    #: Apache edition: how often ``nakhon maintain`` refreshes the rollups.
    refresh_interval_s: float = 30.0
    #: Apache edition: how often ``nakhon maintain`` drops expired chunks.
    drop_interval_s: float = 3600.0


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
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


def load_settings() -> Settings:
    """The settings from the environment, and from the local stack's credentials file.

    Variables set in the environment win over the file. The file is
    ``$NAKHON_ENV_FILE`` if set, else ``.nakhon/secrets/local.env`` when it
    exists (``make up`` writes it; it holds generated passwords, mode 600).
    ``NAKHON_ENV_FILE`` may name several files, separated by ``:``; a later
    one wins (``make up`` gives a second gateway the stack's file, then its own
    login's). Files that do not exist are skipped.
    """
    named = os.environ.get("NAKHON_ENV_FILE")
    candidates = [Path(p) for p in named.split(os.pathsep) if p] if named else [LOCAL_ENV_FILE]
    env_files = tuple(path for path in candidates if path.is_file())
    # _env_file is pydantic-settings' documented per-instance override.
    return Settings(_env_file=env_files or None)  # type: ignore[call-arg]
