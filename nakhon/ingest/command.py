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
        "--drain",
        action="store_true",
        help=(
            "do not run: take over this gateway's persistent session (NAKHON_MQTT_CLIENT_ID) "
            "while no gateway of it runs, unsubscribe it, forward to Kafka what the broker "
            "still holds for it, then end the session and exit. For a gateway taken out of "
            "service (fewer gateways, another share group): nothing queued for it is lost."
        ),
    )
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=5.0,
        metavar="S",
        help="with --drain: done once nothing came for S seconds (default 5)",
    )
    p.add_argument(
        "--end-session",
        action="store_true",
        help=(
            "do not run: tell the broker to forget this gateway's persistent session "
            "(NAKHON_MQTT_CLIENT_ID). Messages queued for it are dropped: --drain forwards "
            "them first."
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
    if args.drain:
        return asyncio.run(_drain(settings, args.idle_seconds))
    # 1: the producer broke and the gateway stopped; a supervisor starts a new one.
    return asyncio.run(_serve(settings))


def build_gateway(settings: Settings, metrics: GatewayMetrics, *, drain: bool = False) -> Gateway:
    """The gateway with its production clients: aiokafka's producer, paho's MQTT session.
    Call it inside the event loop (aiokafka's producer binds to it). ``drain``: the
    MQTT session is drained and ended, not subscribed (``--drain``)."""
    producer = AIOKafkaProducer(**kafka_producer_options(settings.kafka), request_timeout_ms=15_000)

    def mqtt_source(
        on_message: Callable[[MqttMessage], None], on_connection_change: Callable[[int, bool], None]
    ) -> MqttSource:
        return MqttSource(
            settings.mqtt,
            settings.gateway.max_inflight,
            on_message,
            on_connection_change,
            drain=drain,
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


async def _drain(settings: Settings, idle_s: float, connect_timeout_s: float = 60.0) -> int:
    """``--drain``: forward what the broker holds for this session, then end it."""
    registry = CollectorRegistry()
    gateway = build_gateway(settings, GatewayMetrics(registry), drain=True)
    await gateway.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    ready_at: float | None = None
    while gateway.failure is None:
        await asyncio.sleep(0.2)
        now = loop.time()
        if ready_at is None:
            if gateway.readiness()[0]:
                ready_at = now
            elif now - started > connect_timeout_s:
                log.error("drain: %s after %.0f s", gateway.readiness()[1], connect_timeout_s)
                await gateway.stop()
                return 1
            continue
        last = max(ready_at, gateway.last_message_at or ready_at)
        if gateway.in_flight == 0 and now - last >= idle_s:
            break
    await gateway.stop()  # acknowledges what Kafka took, then ends the session
    if gateway.failure is not None:
        return 1
    forwarded = registry.get_sample_value("nakhon_gateway_messages_received_total") or 0
    log.info(
        "drained session %s: %d messages forwarded to %s, session ended",
        settings.mqtt.client_id,
        forwarded,
        settings.kafka.raw_topic,
    )
    return 0
