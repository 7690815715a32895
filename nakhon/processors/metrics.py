"""The processor's Prometheus metrics, created once on an injected registry.

Labels stay bounded: partition, reason, stage, city — never sensor id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.records_consumed = Counter(
            "nakhon_processor_records_consumed_total",
            "Records consumed from nakhon.raw",
            registry=registry,
        )
        self.readings_stored = Counter(
            "nakhon_processor_readings_stored_total",
            "Readings newly stored in TimescaleDB",
            registry=registry,
        )
        self.readings_duplicate = Counter(
            "nakhon_processor_readings_duplicate_total",
            "Readings already stored (replays, republished payloads), skipped by the unique key",
            registry=registry,
        )
        self.positions_stored = Counter(
            "nakhon_processor_positions_stored_total",
            "Vehicle positions newly stored",
            registry=registry,
        )
        self.rejections = Counter(
            "nakhon_processor_rejections_total",
            "Payloads or values refused, by reason code and stage",
            ["reason", "stage"],
            registry=registry,
        )
        self.unknown_metrics = Counter(
            "nakhon_processor_unknown_metrics_total",
            "Values of metric names the catalogue does not know, stored as x_<name>",
            registry=registry,
        )
        self.batch_records = Histogram(
            "nakhon_processor_batch_records",
            "Raw records per processed batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=registry,
        )
        self.db_write_seconds = Histogram(
            "nakhon_processor_db_write_seconds",
            "Time to write one batch to TimescaleDB (one transaction)",
            buckets=_SECONDS,
            registry=registry,
        )
        self.db_write_errors = Counter(
            "nakhon_processor_db_write_errors_total",
            "Failed batch writes, by kind (transient: retried; blocked: retried, needs an "
            "operator; data: the guilty payload isolated and dead-lettered)",
            ["kind"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "nakhon_processor_consumer_lag_records",
            "Records of nakhon.raw not yet processed, per partition",
            ["partition"],
            registry=registry,
        )
        self.end_to_end_seconds = Histogram(
            "nakhon_processor_end_to_end_delay_seconds",
            "From the gateway receiving a message to its readings being stored",
            buckets=_SECONDS,
            registry=registry,
        )
        self.city_last_reading = Gauge(
            "nakhon_city_last_reading_timestamp_seconds",
            "Unix time of the newest stored reading per city (freshness = time() - this)",
            ["city"],
            registry=registry,
        )
        self.clock_offset_seconds = Histogram(
            "nakhon_processor_sensor_clock_offset_seconds",
            "received_at minus the reading's own time (negative: the sensor's clock is ahead)",
            buckets=(-300, -60, -10, -1, 0, 1, 10, 60, 300, 3600, 86400),
            registry=registry,
        )
        self.records_unpublishable = Counter(
            "nakhon_processor_records_unpublishable_total",
            "Records Kafka refused as too large even when cut to their headers, by Kafka "
            "topic (logged; the payload stays in nakhon.raw)",
            ["topic"],
            registry=registry,
        )
        self.partitions_paused = Gauge(
            "nakhon_processor_partitions_paused",
            "Partitions of nakhon.raw paused while a batch waits (the database or Kafka away): "
            "the processor polls on and keeps them; 0 while it consumes",
            registry=registry,
        )
        self.db_outage_seconds = Gauge(
            "nakhon_processor_db_outage_seconds",
            "Seconds since the database stopped taking the processor's writes; 0 while it "
            "takes them",
            registry=registry,
        )
        self.commits = Counter(
            "nakhon_processor_offset_commits_total",
            "Kafka offset commits after a durable batch, by result",
            ["result"],
            registry=registry,
        )
