"""``nakhon processor``: run a processor of the consumer group."""

from __future__ import annotations

import argparse
import asyncio
import logging

from prometheus_client import CollectorRegistry

from nakhon.cli import configure_logging
from nakhon.config import Settings, load_settings
from nakhon.health_server import HealthServer
from nakhon.processors.metrics import ProcessorMetrics
from nakhon.processors.normalize import NormalizePolicy
from nakhon.processors.pipeline import Pipeline
from nakhon.processors.processor import Processor, ShuttingDown
from nakhon.processors.routing import Router
from nakhon.service_runner import run_until_signal
from nakhon.storage.migrate import migrate
from nakhon.storage.writer import ReadingWriter

log = logging.getLogger("nakhon.processor")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "processor",
        help="decode, validate and store nakhon.raw into TimescaleDB",
        description=(
            "Consume nakhon.raw in the consumer group NAKHON_KAFKA_CONSUMER_GROUP: decode each "
            "payload by its topic route (NAKHON_PROCESSOR_ROUTES), normalize it, write batches "
            "to TimescaleDB (NAKHON_DB_DSN) and commit offsets only after the database commit. "
            "Rejections go to nakhon.deadletter. Run several for more throughput (up to one per "
            "partition). Metrics and health on NAKHON_PROCESSOR_METRICS_PORT. SIGTERM drains."
        ),
    )
    p.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not apply pending schema migrations at start (they are safe to run concurrently)",
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
    asyncio.run(_serve(settings, router, migrate_first=not args.no_migrate))
    return 0


async def _serve(settings: Settings, router: Router, migrate_first: bool) -> None:
    registry = CollectorRegistry()
    processor = Processor(
        settings.kafka,
        settings.processor,
        Pipeline(
            router,
            NormalizePolicy.from_settings(settings.processor),
            strict_sensors=settings.processor.strict_sensors,
        ),
        ReadingWriter(settings.db.dsn.get_secret_value()),
        ProcessorMetrics(registry),
    )
    port = settings.processor.metrics_port
    health = HealthServer(registry, processor.readiness, settings.processor.metrics_host, port)
    await health.start()

    async def migrate_schema() -> None:
        await asyncio.to_thread(migrate, settings.db.dsn.get_secret_value())

    async def main() -> None:
        try:
            # Waits until the database and Kafka answer; migrates before the
            # registry (sensors, cities) is first read.
            await processor.start(migrate_schema if migrate_first else None)
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
