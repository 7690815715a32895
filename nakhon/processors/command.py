"""``nakhon processor``: run a processor of the consumer group."""

from __future__ import annotations

import argparse
import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CollectorRegistry

from nakhon.cli import configure_logging
from nakhon.config import MissingDsnError, Settings, load_settings
from nakhon.health_server import HealthServer
from nakhon.kafka_client import KafkaSecurityError, kafka_client_options, kafka_producer_options
from nakhon.processors.metrics import ProcessorMetrics
from nakhon.processors.normalize import NormalizePolicy
from nakhon.processors.pipeline import Pipeline
from nakhon.processors.processor import Processor, ShuttingDown
from nakhon.processors.routing import Router
from nakhon.service_runner import run_until_signal
from nakhon.storage.migrate import require_schema
from nakhon.storage.writer import ReadingWriter

log = logging.getLogger("nakhon.processor")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "processor",
        help="decode, validate and store nakhon.raw into TimescaleDB",
        description=(
            "Consume nakhon.raw in the consumer group NAKHON_KAFKA_CONSUMER_GROUP: decode each "
            "payload by its topic route (NAKHON_PROCESSOR_ROUTES), normalize it, write batches "
            "to TimescaleDB (NAKHON_DB_PROCESSOR_DSN, role nakhon_writer) and commit offsets only "
            "after the database commit. It never migrates: it waits until `nakhon migrate` has "
            "brought the schema to the version it needs. "
            "Rejections go to nakhon.deadletter. Run several for more throughput (up to one per "
            "partition). Metrics and health on NAKHON_PROCESSOR_METRICS_PORT. SIGTERM drains."
        ),
    )
    p.set_defaults(func=run_processor)


def run_processor(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        router = Router(settings.processor.routes, settings.processor.lorawan_city)
    except (KeyError, ValueError) as exc:
        log.error("bad NAKHON_PROCESSOR_ROUTES: %s", exc)
        return 2
    try:
        dsn = settings.db.service_dsn("processor")
    except MissingDsnError as exc:
        log.error("%s", exc)
        return 2
    try:
        kafka_client_options(settings.kafka)  # incomplete security settings: refuse now
    except KafkaSecurityError as exc:
        log.error("%s", exc)
        return 2
    asyncio.run(_serve(settings, router, dsn))
    return 0


def build_processor(
    settings: Settings, router: Router, dsn: str, metrics: ProcessorMetrics
) -> Processor:
    """The processor with its production clients: aiokafka's consumer and producer, psycopg's
    writer. Call it inside the event loop (aiokafka's clients bind to it)."""
    kafka = settings.kafka
    consumer = AIOKafkaConsumer(
        kafka.raw_topic,
        **kafka_client_options(kafka),
        group_id=kafka.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.processor.batch_max_records,
        # A batch waiting for the database polls on, paused (Processor._hold_partitions).
        max_poll_interval_ms=kafka.max_poll_interval_ms,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    pipeline = Pipeline(
        router,
        NormalizePolicy.from_settings(settings.processor),
        strict_sensors=settings.processor.strict_sensors,
    )
    return Processor(
        kafka,
        settings.processor,
        pipeline,
        ReadingWriter(dsn),
        metrics,
        consumer,
        AIOKafkaProducer(**kafka_producer_options(kafka)),
    )


async def _serve(settings: Settings, router: Router, dsn: str) -> None:
    registry = CollectorRegistry()
    processor = build_processor(settings, router, dsn, ProcessorMetrics(registry))
    port = settings.processor.metrics_port
    health = HealthServer(registry, processor.readiness, settings.processor.metrics_host, port)
    await health.start()

    async def schema_ready() -> None:
        await require_schema(dsn)

    async def main() -> None:
        try:
            # Waits until the database and Kafka answer, and until the schema
            # is migrated before the registry (sensors, cities) is first read.
            await processor.start(schema_ready)
        except ShuttingDown:
            return
        await processor.run()

    async def stop() -> None:
        await processor.stop()

    try:
        await run_until_signal("processor", main, stop)
    finally:
        await processor.close()
        await health.stop()
        log.info("processor stopped")
