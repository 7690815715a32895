"""``make bench``: the pipeline's throughput, latency and CPU, and the machine's ceilings.

Run as ``python -m tools.bench`` from the checkout (``make bench`` does): the
benchmark is a harness, not part of the installed product.

Phases, each against a gateway and a processor of the bench's own: flat out
(throughput), then at 25, 50 and 75 % of the flat-out rate just measured
(publish -> row latency), then a city's fleet (many sensors, mixed formats,
each at its own pace), then flat out again over TLS. Each phase also reports
the CPU every component spent on it, per message and per reading: the bench's
gateway and processor, and the stack's Kafka, Mosquitto and PostgreSQL (their
pids from ``make up``'s ``run/*.pid``; those three also serve whatever else
uses the stack meanwhile). Then the API's latency, and last the raw ceilings
of each stage alone.
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
from dataclasses import dataclass
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
from tools.bench.cpu import CpuMeter, idle_rates, stack_pids
from tools.bench.end_to_end import READINGS_PER_MESSAGE, PhaseResult, cleanup, run_phase
from tools.bench.fleet import FleetResult, build_bench_fleet, register_fleet, run_fleet
from tools.bench.mqtt_logins import Broker, open_broker
from tools.bench.report import print_report
from tools.sandbox import LOCAL_CA, MQTT_TLS_PORT, REPO, PipelineNamespace, Service, http_ok

log = logging.getLogger("tools.bench")
#: Where ``make up`` writes its services' pids (deploy/local/lib.sh: $STATE/run).
STACK_RUN = Path(os.environ.get("NAKHON_STATE_DIR", REPO / ".nakhon")) / "run"
#: The stack's services whose CPU is measured beside the bench's gateway and processor.
STACK_COMPONENTS = ("kafka", "mosquitto", "postgres")
#: The pid files of a three-broker cluster's nodes (NAKHON_KAFKA_BROKERS=3 make up).
KAFKA_CLUSTER_NODES = ("kafka-1", "kafka-2", "kafka-3")
#: How long the idle floor of each component's CPU is measured, nothing published.
IDLE_SECONDS = 3.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=(
            "Run a gateway and a processor of its own against the local stack, publish SenML "
            "packs of 5 readings flat out (throughput), then at shares of that rate (latency), "
            "then a city's fleet of mixed formats; measure each component's CPU per message, "
            "and the raw ceilings of Mosquitto, Kafka produce and COPY alone on the same "
            "machine. Prints a report and writes it as JSON."
        ),
    )
    p.add_argument("--messages", type=int, default=40_000, help="messages in the throughput phase")
    p.add_argument(
        "--latency-shares",
        default="25,50,75",
        help="latency phases, as percentages of the flat-out rate (default 25,50,75)",
    )
    p.add_argument("--latency-seconds", type=float, default=8.0, help="each latency phase's length")
    p.add_argument(
        "--p99-target-ms",
        type=float,
        default=1000.0,
        help="the p99 publish-to-row latency to meet at 50 %% of flat out (default 1000)",
    )
    p.add_argument("--fleet-sensors", type=int, default=10_000, help="sensors in the fleet")
    p.add_argument(
        "--fleet-interval", type=float, default=10.0, help="seconds between two messages of one"
    )
    p.add_argument(
        "--fleet-seconds", type=float, default=20.0, help="fleet phase length (whole intervals)"
    )
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
    print_report(report)
    print(f"\nJSON: {args.json}")
    return 0


def _step(text: str) -> None:
    print(f"  {text} ...", file=sys.stderr, flush=True)


@dataclass
class _Pipeline:
    """What the pipeline's phases measured."""

    throughput: PhaseResult
    throughput_tls: PhaseResult
    #: (share of flat out in %, offered messages/s, result)
    latency: list[tuple[int, float, PhaseResult]]
    fleet: FleetResult
    idle: dict[str, float]


async def _bench(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    # The owner's: the bench removes its rows afterwards (its processor runs as the writer).
    dsn = settings.db.dsn.get_secret_value()
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    run = await _pipeline(args, settings, dsn)
    api = await _api_latency(settings)
    # The ceilings come last: the COPY ceiling writes and deletes 200,000 rows,
    # and the autovacuum that follows would land in the pipeline's phases.
    c = report["ceilings"] = await _ceilings(settings, dsn)
    t = run.throughput
    msgs_per_s = t.readings_per_s / READINGS_PER_MESSAGE
    report["end_to_end"] = {
        "throughput": dataclasses.asdict(t),
        "throughput_tls": dataclasses.asdict(run.throughput_tls),
        "latency_at_share_of_flat_out": [
            {
                "share_percent": share,
                "offered_messages_per_s": round(rate),
                "offered_readings_per_s": round(rate * READINGS_PER_MESSAGE),
            }
            | dataclasses.asdict(r)
            for share, rate, r in run.latency
        ],
        "p99_target_ms_at_50_percent": args.p99_target_ms,
        "messages_per_s": round(msgs_per_s),
        "ratio_to_mosquitto_ceiling": round(
            msgs_per_s / c["mosquitto_c_clients_qos1_msgs_per_s"], 2
        ),
        "ratio_to_paho_ceiling": round(msgs_per_s / c["mosquitto_paho_clients_qos1_msgs_per_s"], 2),
        "ratio_to_kafka_ceiling": round(msgs_per_s / c["kafka_produce_records_per_s"], 2),
        "ratio_to_copy_ceiling": round(t.readings_per_s / c["copy_rows_per_s"], 2),
    }
    report["fleet"] = dataclasses.asdict(run.fleet) | {
        "offered_readings_per_s": round(run.fleet.expected_readings / run.fleet.publish_seconds)
    }
    report["cpu_idle_percent_of_a_core"] = {k: round(v * 100, 1) for k, v in run.idle.items()}
    if api is not None:
        report["api"] = api
    return report


async def _pipeline(args: argparse.Namespace, settings: Settings, dsn: str) -> _Pipeline:
    """The phases through a gateway and a processor of the bench's own."""
    ns = PipelineNamespace(batch_max_records=5000, kafka=settings.kafka)
    await ns.prepare()
    fleet = build_bench_fleet(ns, args.fleet_sensors)
    gateway, processor = ns.gateway(), ns.processor()
    try:
        # Registered before the processor starts: it loads the registry then.
        _step(f"fleet: {len(fleet):,} sensors into the sensor registry")
        await asyncio.to_thread(register_fleet, fleet, dsn)
        gateway.start()
        processor.start()
        meter = _meter(gateway, processor)
        _step("warm-up")
        await run_phase(ns, "w", 1000, None)
        _step(f"CPU of each component while nothing is published ({IDLE_SECONDS:g}s)")
        idle_from = meter.sample()
        await asyncio.sleep(IDLE_SECONDS)
        idle = meter.idle = idle_rates(idle_from, meter.sample())
        _step(f"throughput: {args.messages} messages x 5 readings, flat out (mosquitto_pub)")
        throughput = await run_phase(ns, "t", args.messages, None, meter=meter)
        flat_out = throughput.messages / throughput.seconds
        latency: list[tuple[int, float, PhaseResult]] = []
        for share in (int(x) for x in args.latency_shares.split(",")):
            rate = flat_out * share / 100
            _step(
                f"latency: {share} % of flat out, {rate:,.0f} msg/s for {args.latency_seconds:g}s"
            )
            n = int(rate * args.latency_seconds)
            result = await run_phase(ns, f"l{share}-", n, rate, meter=meter)
            latency.append((share, rate, result))
        _step(
            f"fleet: {len(fleet):,} sensors in {len({s.sim.city for s in fleet})} cities,"
            f" one message each every {args.fleet_interval:g}s, for {args.fleet_seconds:g}s"
        )
        fleet_result = await run_fleet(
            ns, fleet, args.fleet_interval, args.fleet_seconds, dsn, meter
        )
        _step("throughput again, every MQTT hop over TLS (publishers and gateway on 8883)")
        gateway.terminate()
        tls_gateway = ns.gateway(tls=True)
        tls_gateway.start()
        throughput_tls = await run_phase(ns, "s", args.messages, None, tls=True)
    finally:
        ns.stop_all()
        cleanup(ns, dsn)
    return _Pipeline(throughput, throughput_tls, latency, fleet_result, idle)


async def _ceilings(settings: Settings, dsn: str) -> dict[str, int]:
    """Each stage alone, with logins of a namespace of its own (no gateway reads it)."""
    ns = PipelineNamespace(kafka=settings.kafka)
    await ns.prepare()
    try:
        ceiling_topic = f"{ns.name}.ceiling"
        admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
        await admin.start()
        try:
            await admin.create_topics([NewTopic(ceiling_topic, 3, 1)])
        finally:
            await admin.close()
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
    finally:
        ns.stop_all()
    return {
        "mosquitto_c_clients_qos1_msgs_per_s": round(mqtt_c_rate),
        "mosquitto_c_clients_tls_qos1_msgs_per_s": round(mqtt_tls_rate),
        "mosquitto_c_clients_anonymous_qos1_msgs_per_s": round(mqtt_open_rate),
        "mosquitto_paho_clients_qos1_msgs_per_s": round(mqtt_rate),
        "kafka_produce_records_per_s": round(kafka_rate),
        "copy_rows_per_s": round(copy_rate),
    }


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


def _meter(gateway: Service, processor: Service) -> CpuMeter:
    """The bench's gateway and processor, and the stack's services ``make up`` started."""
    assert gateway.proc is not None and processor.proc is not None
    components = {"gateway": gateway.proc.pid, "processor": processor.proc.pid}
    stack = stack_pids(STACK_RUN, (*STACK_COMPONENTS, *KAFKA_CLUSTER_NODES))
    for name in STACK_COMPONENTS:
        if name not in stack and not (name == "kafka" and set(KAFKA_CLUSTER_NODES) & set(stack)):
            print(f"  (no {name} pid in {STACK_RUN}: its CPU is not measured)", file=sys.stderr)
    return CpuMeter(components | stack)
