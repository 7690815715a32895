"""``make bench``: the pipeline's throughput and latency, and the machine's ceilings.

Run as ``python -m tools.bench`` from the checkout (``make bench`` does): the
benchmark is a harness, not part of the installed product.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from nakhon.cli import configure_logging
from nakhon.config import Settings, load_settings
from nakhon.kafka_client import kafka_client_options
from tools.bench.api_latency import measure_api_latency
from tools.bench.ceilings import (
    copy_ceiling,
    kafka_produce_ceiling,
    mosquitto_c_ceiling,
    mosquitto_ceiling,
)
from tools.bench.end_to_end import cleanup, run_phase
from tools.bench.mqtt_logins import Broker, open_broker
from tools.sandbox import LOCAL_CA, MQTT_TLS_PORT, PipelineNamespace, http_ok

log = logging.getLogger("tools.bench")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=(
            "Run a gateway and a processor of its own against the local stack, publish SenML "
            "packs of 5 readings flat out (throughput) and then at a fixed rate (latency), and "
            "measure the raw ceilings of Mosquitto, Kafka produce and COPY alone on the same "
            "machine. Prints a report and writes it as JSON."
        ),
    )
    p.add_argument("--messages", type=int, default=20_000, help="messages in the throughput phase")
    p.add_argument(
        "--latency-rate", type=float, default=400.0, help="messages/s in the latency phase"
    )
    p.add_argument("--latency-seconds", type=float, default=15.0, help="latency phase length")
    p.add_argument(
        "--json", type=Path, default=Path("bench-results/bench.json"), help="where to write JSON"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    return run_bench(build_parser().parse_args(argv))


def run_bench(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    report = asyncio.run(_bench(args, settings))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    _print(report)
    print(f"\nJSON: {args.json}")
    return 0


def _step(text: str) -> None:
    print(f"  {text} ...", file=sys.stderr, flush=True)


async def _bench(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    # The owner's: the bench removes its rows afterwards (its processor runs as the writer).
    dsn = settings.db.dsn.get_secret_value()
    ns = PipelineNamespace(batch_max_records=5000, kafka=settings.kafka)
    ceiling_topic = f"{ns.name}.ceiling"
    await ns.prepare()
    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(ceiling_topic, 3, 1)])
    finally:
        await admin.close()
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    login = Broker(
        publisher=ns.publisher_credentials,
        subscriber=ns.gateway_credentials,
        share_group=ns.share_group,
    )
    root = f"{ns.root}/ceiling"
    _step("ceiling: Mosquitto alone, C clients, each logged in (50,000 QoS 1 messages)")
    mqtt_c_rate = await asyncio.to_thread(mosquitto_c_ceiling, 50_000, login, root)
    _step("ceiling: the same over TLS (port 8883)")
    tls = dataclasses.replace(login, port=MQTT_TLS_PORT, ca_file=LOCAL_CA)
    mqtt_tls_rate = await asyncio.to_thread(mosquitto_c_ceiling, 50_000, tls, root)
    _step("ceiling: the same on a private broker open to anonymous clients, for comparison")
    with open_broker() as open_one:
        mqtt_open_rate = await asyncio.to_thread(mosquitto_c_ceiling, 50_000, open_one)
    _step("ceiling: Mosquitto alone, paho clients (50,000 QoS 1 messages)")
    mqtt_rate = await asyncio.to_thread(mosquitto_ceiling, 50_000, login, root)
    _step("ceiling: Kafka produce alone (200,000 records)")
    kafka_rate = await kafka_produce_ceiling(200_000, ceiling_topic, settings.kafka)
    _step("ceiling: COPY into readings alone (200,000 rows)")
    copy_rate = await copy_ceiling(200_000, settings.db.service_dsn("processor"), dsn)
    report["ceilings"] = {
        "mosquitto_c_clients_qos1_msgs_per_s": round(mqtt_c_rate),
        "mosquitto_c_clients_tls_qos1_msgs_per_s": round(mqtt_tls_rate),
        "mosquitto_c_clients_anonymous_qos1_msgs_per_s": round(mqtt_open_rate),
        "mosquitto_paho_clients_qos1_msgs_per_s": round(mqtt_rate),
        "kafka_produce_records_per_s": round(kafka_rate),
        "copy_rows_per_s": round(copy_rate),
    }
    gateway, processor = ns.gateway(), ns.processor()
    try:
        gateway.start()
        processor.start()
        _step("warm-up")
        await run_phase(ns, "w", 1000, None)
        _step(f"throughput: {args.messages} messages x 5 readings, flat out (mosquitto_pub)")
        throughput = await run_phase(ns, "t", args.messages, None)
        n_latency = int(args.latency_rate * args.latency_seconds)
        _step(f"latency: {args.latency_rate:.0f} messages/s for {args.latency_seconds:.0f}s")
        latency = await run_phase(ns, "l", n_latency, args.latency_rate)
        _step("throughput again, every MQTT hop over TLS (publishers and gateway on 8883)")
        gateway.terminate()
        tls_gateway = ns.gateway(tls=True)
        tls_gateway.start()
        throughput_tls = await run_phase(ns, "s", args.messages, None, tls=True)
    finally:
        ns.stop_all()
        cleanup(ns, dsn)
    msgs_per_s = throughput.readings_per_s / 5
    report["end_to_end"] = {
        "throughput": dataclasses.asdict(throughput),
        "throughput_tls": dataclasses.asdict(throughput_tls),
        "latency_at_fixed_rate": dataclasses.asdict(latency)
        | {"offered_readings_per_s": round(args.latency_rate * 5)},
        "messages_per_s": round(msgs_per_s),
        "ratio_to_mosquitto_ceiling": round(msgs_per_s / mqtt_c_rate, 2),
        "ratio_to_paho_ceiling": round(msgs_per_s / mqtt_rate, 2),
        "ratio_to_kafka_ceiling": round(msgs_per_s / kafka_rate, 2),
        "ratio_to_copy_ceiling": round(throughput.readings_per_s / copy_rate, 2),
    }
    api = await _api_latency(settings)
    if api is not None:
        report["api"] = api
    return report


async def _api_latency(settings: Settings) -> dict[str, float] | None:
    """The API's series latency, when the API is part of this build and running."""
    base = f"http://127.0.0.1:{settings.api.port}"
    if not await asyncio.to_thread(http_ok, f"{base}/healthz"):
        print("  (API not running: its latency is not measured)", file=sys.stderr)
        return None
    _step("API: 24 h, 5-minute buckets, one sensor and a whole city")
    key = settings.api.local_key.get_secret_value() if settings.api.local_key else None
    # Seeding the bench city writes: the owner's DSN.
    owner = settings.db.dsn.get_secret_value()
    result: dict[str, float] = await measure_api_latency(base, dsn=owner, api_key=key)
    return result


def _print(report: dict[str, Any]) -> None:
    c = report["ceilings"]
    e = report["end_to_end"]
    t, lat = e["throughput"], e["latency_at_fixed_rate"]
    print(f"\nNakhon bench, {report['when']}, {report['machine']['cpus']} CPUs\n")
    print("Raw ceilings of this machine (each stage alone):")
    print(
        f"  Mosquitto QoS 1, C clients, login   "
        f"{c['mosquitto_c_clients_qos1_msgs_per_s']:>10,} msg/s"
    )
    print(
        f"  ... same over TLS                   "
        f"{c['mosquitto_c_clients_tls_qos1_msgs_per_s']:>10,} msg/s"
    )
    print(
        f"  ... open broker, no authentication  "
        f"{c['mosquitto_c_clients_anonymous_qos1_msgs_per_s']:>10,} msg/s"
    )
    print(
        f"  Mosquitto QoS 1, paho (Python)      "
        f"{c['mosquitto_paho_clients_qos1_msgs_per_s']:>10,} msg/s"
    )
    print(f"  Kafka produce (acks=all, lz4)       {c['kafka_produce_records_per_s']:>10,} rec/s")
    print(f"  COPY + upsert into readings         {c['copy_rows_per_s']:>10,} rows/s")
    print("\nEnd to end (MQTT -> gateway -> Kafka -> processor -> TimescaleDB):")
    print(
        f"  throughput   {t['readings_per_s']:>10,} readings/s  ({e['messages_per_s']:,} msg/s,"
        f" {t['readings']:,} readings in {t['seconds']} s)"
    )
    s = e["throughput_tls"]
    print(
        f"  over TLS     {s['readings_per_s']:>10,} readings/s  ({s['readings']:,} readings"
        f" in {s['seconds']} s; publishers and gateway on 8883)"
    )
    print(
        f"  ratios       {e['ratio_to_mosquitto_ceiling']:.2f} of Mosquitto"
        f" ({e['ratio_to_paho_ceiling']:.2f} of its paho figure),"
        f" {e['ratio_to_kafka_ceiling']:.2f} of Kafka produce,"
        f" {e['ratio_to_copy_ceiling']:.2f} of COPY"
    )
    print(
        f"  latency      p50 {lat['latency_p50_ms']} ms, p99 {lat['latency_p99_ms']} ms"
        f" at {lat['offered_readings_per_s']:,} readings/s offered"
    )
    if "api" in report:
        print("\nAPI (GET /v1/series):")
        for k, v in report["api"].items():
            print(f"  {k:<40} {v}")
