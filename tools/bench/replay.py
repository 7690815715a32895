"""How fast ``nakhon replay deadletters`` and ``nakhon replay raw`` put records back.

``python -m tools.bench.replay [--packs N] [--sensors S]`` (not part of
``make bench``: it takes about a minute). In a sandbox namespace of its own
(:mod:`tools.sandbox`) with one processor in strict-sensors mode:

1. ``--packs`` SenML packs of 5 readings of ``--sensors`` unregistered sensors
   are produced to the namespace's raw topic as the gateway writes them (key =
   MQTT topic, the gateway's headers); the processor dead-letters every one
   (``unknown_sensor``);
2. the sensors are registered, and a probe reading stored proves the
   processor's registry has them;
3. ``nakhon replay deadletters`` runs as an operator runs it; timed from its
   start to its exit (sent) and to every reading stored with the processor's
   consumer group committed to the end of raw (stored);
4. the rows are deleted, and ``nakhon replay raw`` over the time range of
   step 1 is timed the same way.

The rates are records (packs) and readings per second, sending and end to end;
the processor's own rate is the bound of the second figure. It prints them and
writes ``bench-results/replay.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import orjson
import psycopg
from aiokafka import AIOKafkaProducer

from nakhon.config import load_settings
from nakhon.domain.raw_record import MqttMessage, raw_headers
from nakhon.kafka_client import kafka_producer_options
from tools.bench.end_to_end import cleanup
from tools.sandbox import REPO, PipelineNamespace, wait_for

READINGS_PER_PACK = 5
_METRICS = ("pm2_5", "pm10", "temperature", "humidity", "noise_laeq")
RESULTS = REPO / "bench-results" / "replay.json"


@dataclass(frozen=True)
class ReplayRate:
    command: str
    records: int
    readings: int
    #: From the command's start to its exit: every record sent and acknowledged by Kafka.
    sent_s: float
    #: From the command's start to every reading stored, the consumer group caught up.
    stored_s: float

    @property
    def rates(self) -> dict[str, float]:
        return {
            "sent_records_per_s": self.records / self.sent_s,
            "stored_records_per_s": self.records / self.stored_s,
            "stored_readings_per_s": self.readings / self.stored_s,
        }


def pack(sensor: str, seq: int, when: float) -> bytes:
    """A SenML pack of 5 readings dated ``when``."""
    records: list[dict[str, object]] = [
        {"bn": f"{sensor}:", "bt": round(when, 6), "n": _METRICS[0], "v": float(seq % 500)}
    ]
    records += [{"n": m, "v": 20.0 + seq % 50} for m in _METRICS[1:]]
    return orjson.dumps(records)


async def produce_raw(ns: PipelineNamespace, messages: list[tuple[str, bytes]]) -> None:
    """``messages`` onto the namespace's raw topic as the gateway writes them."""
    producer = AIOKafkaProducer(**kafka_producer_options(ns.kafka))
    await producer.start()
    try:
        now_us = time.time_ns() // 1000
        sends = [
            await producer.send(
                ns.raw_topic,
                value=payload,
                key=topic.encode(),
                headers=raw_headers(MqttMessage(topic, payload, 1, 0, now_us), "bench-replay"),
            )
            for topic, payload in messages
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def count_readings(dsn: str, prefix: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings WHERE sensor_id LIKE %s", (prefix + "%",)
        ).fetchone()
    return int(row[0]) if row else 0


def register(dsn: str, sensor_ids: list[str]) -> None:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sensors (sensor_id, city, kind, source)"
            " VALUES (%s, 'khon_kaen', 'air_quality', 'registry')",
            [(s,) for s in sensor_ids],
        )


async def timed_replay(
    ns: PipelineNamespace, args: list[str], stored: Callable[[], bool], records: int
) -> ReplayRate:
    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "nakhon.cli", "replay", *args],
        env=ns.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    sent = time.monotonic()
    if done.returncode != 0:
        raise RuntimeError(f"nakhon replay {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    print(done.stdout.strip(), file=sys.stderr)
    await wait_for(stored, 300, "every replayed reading stored")
    await wait_for(ns.caught_up, 60, "the consumer group caught up")
    end = time.monotonic()
    return ReplayRate(
        f"replay {args[0]}", records, records * READINGS_PER_PACK, sent - started, end - started
    )


async def bench(packs: int, sensors: int) -> list[ReplayRate]:
    dsn = load_settings().db.dsn.get_secret_value()
    ns = PipelineNamespace()
    await ns.prepare()
    try:
        processor = ns.processor()
        processor.env["NAKHON_PROCESSOR_STRICT_SENSORS"] = "true"
        processor.env["NAKHON_PROCESSOR_REGISTRY_REFRESH_S"] = "0.5"
        await processor.start_and_wait()
        ids = [f"{ns.name}-s{i:04d}" for i in range(sensors)]
        start_s = time.time() - 6 * 3600  # an afternoon ago: within the backfill window
        messages = [
            (ns.topic("khon_kaen", ids[i % sensors], "senml"),
             pack(ids[i % sensors], i, start_s + (i // sensors) * 60))
            for i in range(packs)
        ]  # fmt: skip
        since = datetime.now(UTC)
        await produce_raw(ns, messages)
        until = datetime.now(UTC)
        print(f"{packs} packs produced; waiting for their dead letters", file=sys.stderr)
        await wait_for(ns.caught_up, 300, "the packs dead-lettered")
        assert count_readings(dsn, ns.name) == 0

        probe = f"{ns.name}-probe"
        register(dsn, [*ids, probe])
        probe_pack = pack(probe, 0, start_s)
        await produce_raw(ns, [(ns.topic("khon_kaen", probe, "senml"), probe_pack)])
        await wait_for(lambda: count_readings(dsn, probe) > 0, 60, "the probe stored")
        expected = packs * READINGS_PER_PACK

        def all_stored() -> bool:
            return count_readings(dsn, f"{ns.name}-s") == expected

        results = [await timed_replay(ns, ["deadletters"], all_stored, packs)]
        with psycopg.connect(dsn) as conn:
            conn.execute("DELETE FROM readings WHERE sensor_id LIKE %s", (f"{ns.name}-s%",))
        window = ["--since", since.isoformat(), "--until", until.isoformat()]
        results.append(await timed_replay(ns, ["raw", *window], all_stored, packs))
        return results
    finally:
        ns.stop_all()
        cleanup(ns, dsn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.replay", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument("--packs", type=int, default=20_000, help="SenML packs of 5 readings")
    parser.add_argument("--sensors", type=int, default=200, help="unregistered sensors")
    args = parser.parse_args(argv)
    results = asyncio.run(bench(args.packs, args.sensors))
    report = [asdict(r) | r.rates for r in results]
    for r in results:
        rates = r.rates
        print(
            f"{r.command:<20} {r.records:,} records ({r.readings:,} readings):"
            f" sent in {r.sent_s:.1f} s ({rates['sent_records_per_s']:,.0f} records/s),"
            f" stored in {r.stored_s:.1f} s ({rates['stored_records_per_s']:,.0f} records/s,"
            f" {rates['stored_readings_per_s']:,.0f} readings/s)"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
