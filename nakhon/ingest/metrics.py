"""The gateway's Prometheus metrics, created once on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "nakhon_gateway_messages_received_total",
            "MQTT messages taken from the broker",
            registry=registry,
        )
        self.forwarded = Counter(
            "nakhon_gateway_messages_forwarded_total",
            "Messages Kafka acknowledged on nakhon.raw",
            registry=registry,
        )
        self.acknowledged = Counter(
            "nakhon_gateway_messages_acknowledged_total",
            "PUBACKs sent to the broker (after Kafka acknowledged)",
            registry=registry,
        )
        self.qos0_dropped = Counter(
            "nakhon_gateway_qos0_dropped_total",
            "QoS 0 messages dropped because max_queued_qos0 QoS 0 messages already waited "
            "for Kafka (QoS 0 is at most once)",
            registry=registry,
        )
        self.send_errors = Counter(
            "nakhon_gateway_kafka_send_errors_total",
            "Kafka sends that failed and were retried",
            registry=registry,
        )
        self.send_latency = Histogram(
            "nakhon_gateway_kafka_send_seconds",
            "Time from taking an MQTT message to Kafka acknowledging it",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.inflight = Gauge(
            "nakhon_gateway_inflight_messages",
            "Messages taken from MQTT and not yet acknowledged",
            registry=registry,
        )
        self.reconnects = Counter(
            "nakhon_gateway_mqtt_reconnects_total",
            "Reconnections to the MQTT broker",
            registry=registry,
        )
        self.mqtt_connected = Gauge(
            "nakhon_gateway_mqtt_connected",
            "1 while connected to the MQTT broker",
            registry=registry,
        )
