"""``nakhon gateway``: run the MQTT -> Kafka ingest gateway."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from nakhon.cli import configure_logging
from nakhon.config import Settings, load_settings
from nakhon.domain.raw_record import MqttMessage
from nakhon.health_server import HealthServer
from nakhon.ingest.gateway import Gateway
from nakhon.ingest.metrics import GatewayMetrics
from nakhon.ingest.mqtt_source import MqttSource, end_session
from nakhon.kafka_client import KafkaSecurityError, kafka_client_options, kafka_producer_options
from nakhon.service_runner import run_until_signal

log = logging.getLogger("nakhon.gateway")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "gateway",
        help="forward MQTT messages to Kafka nakhon.raw (PUBACK after Kafka's ack)",
        description=(
            "Subscribe to the MQTT topic filters (NAKHON_MQTT_TOPIC_FILTERS) through the "
            "shared subscription group NAKHON_MQTT_SHARE_GROUP and forward every message, "
            "untouched, to Kafka. Run several for more throughput. Metrics and health on "
            "NAKHON_GATEWAY_METRICS_PORT (/metrics, /healthz, /readyz). SIGTERM drains."
        ),
    )
    p.add_argument(
        "--end-session",
        action="store_true",
        help=(
            "do not run: tell the broker to forget this gateway's persistent session "
            "(NAKHON_MQTT_CLIENT_ID), for a gateway taken out of service for good. "
            "Messages queued for it are dropped."
        ),
    )
    p.set_defaults(func=run_gateway)


def run_gateway(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    if args.end_session:
        if end_session(settings.mqtt):
            log.info("the broker forgot the session of %s", settings.mqtt.client_id)
            return 0
        log.error("the broker did not answer at %s:%d", settings.mqtt.host, settings.mqtt.port)
        return 1
    try:
        kafka_client_options(settings.kafka)  # incomplete security settings: refuse now
    except KafkaSecurityError as exc:
        log.error("%s", exc)
        return 2
    # 1: the producer broke and the gateway stopped; a supervisor starts a new one.
    return asyncio.run(_serve(settings))


def build_gateway(settings: Settings, metrics: GatewayMetrics) -> Gateway:
    """The gateway with its production clients: aiokafka's producer, paho's MQTT session.
    Call it inside the event loop (aiokafka's producer binds to it)."""
    producer = AIOKafkaProducer(**kafka_producer_options(settings.kafka), request_timeout_ms=15_000)

    def mqtt_source(
        on_message: Callable[[MqttMessage], None], on_connection_change: Callable[[int, bool], None]
    ) -> MqttSource:
        return MqttSource(
            settings.mqtt, settings.gateway.max_inflight, on_message, on_connection_change
        )

    return Gateway(settings.kafka, settings.gateway, metrics, producer, mqtt_source)


async def _serve(settings: Settings) -> int:
    registry = CollectorRegistry()
    gateway = build_gateway(settings, GatewayMetrics(registry))
    health = HealthServer(
        registry, gateway.readiness, settings.gateway.metrics_host, settings.gateway.metrics_port
    )
    await health.start()
    log.info(
        "gateway %s: MQTT %s:%d -> Kafka %s topic %s",
        settings.gateway.name,
        settings.mqtt.host,
        settings.mqtt.port,
        settings.kafka.bootstrap_servers,
        settings.kafka.raw_topic,
    )

    async def main() -> None:
        await gateway.start()
        await gateway.wait_stopped()

    async def stop() -> None:
        await gateway.stop()
        await health.stop()

    await run_until_signal("gateway", main, stop)
    return 0 if gateway.failure is None else 1
