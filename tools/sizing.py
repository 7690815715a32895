"""Measure what a reading costs on disk, for the sizing in docs/deploy.md.

    .venv/bin/python -m tools.sizing               # both measurements, on the local stack
    .venv/bin/python -m tools.sizing --skip-kafka  # TimescaleDB only

TimescaleDB: in a scratch schema of the ``nakhon`` database it creates tables
shaped like ``readings`` and the Apache edition's rollup tables
(``CREATE TABLE ... (LIKE public.<table> INCLUDING ALL)``, made hypertables
with the live tables' chunk intervals), inserts ``--sensors`` x ``--metrics``
x ``--minutes`` readings at a 1-minute cadence in arrival order (time, then
sensor), rolls them up to minutes and hours as ``nakhon maintain`` would, and
reports ``hypertable_detailed_size`` per row: heap, indexes and TOAST. On the
Community edition it then compresses the readings chunks with Nakhon's
settings (segment by sensor_id, metric; order by time DESC) and measures
again; the Apache edition has no compression, which it says.

Kafka: it creates a scratch topic with ``nakhon.raw``'s partition count,
produces ``--kafka-messages`` records exactly as the gateway writes them
(key = MQTT topic, the simulator's payloads, the gateway's headers, the
gateway's producer options: lz4, acks=all, idempotent), and divides the
size of the topic's ``.log`` segments under ``--kafka-data-dir`` by the
number of records. It also reports the same ratio for ``nakhon.raw`` as it
stands (segment bytes over the records Kafka still holds).

Every scratch object (schema, topic) is dropped at the end, also on failure
or Ctrl-C. Connects with NAKHON_DB_DSN (the owner role: it creates a schema)
and NAKHON_KAFKA_BOOTSTRAP_SERVERS, as every nakhon command does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from nakhon.config import Settings, load_settings

#: The canonical metrics of an air-quality station (nakhon/domain/catalogue.py),
#: each with a plausible range and the precision devices report it at.
METRICS: dict[str, tuple[float, float, int]] = {
    "pm2_5": (5.0, 80.0, 1),
    "pm10": (10.0, 130.0, 1),
    "temperature": (22.0, 38.0, 2),
    "humidity": (40.0, 95.0, 1),
    "no2": (2.0, 60.0, 1),
    "o3": (5.0, 80.0, 1),
    "co": (0.1, 3.0, 2),
    "noise_laeq": (40.0, 85.0, 1),
}

ROLLUPS = ("nakhon_readings_1m_data", "nakhon_readings_1h_data")

#: Records per Kafka batch to measure at (0: as many as the producer packs).
KAFKA_BATCHES = (1, 10, 100, 0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tools.sizing",
        description=(
            "Measure bytes per reading in TimescaleDB (scratch schema, ~1 M realistic rows, "
            "indexes included; compressed too where the edition can) and bytes per "
            "nakhon.raw message on Kafka's disk (scratch topic). Drops what it made."
        ),
    )
    p.add_argument("--sensors", type=int, default=1000, help="sensors (default 1000)")
    p.add_argument(
        "--metrics", type=int, default=5, help=f"metrics per sensor, 1-{len(METRICS)} (default 5)"
    )
    p.add_argument(
        "--minutes", type=int, default=200, help="minutes of 1-minute readings (default 200)"
    )
    p.add_argument(
        "--kafka-messages", type=int, default=100_000, help="records to produce (default 100000)"
    )
    p.add_argument(
        "--kafka-data-dir",
        type=Path,
        default=Path(".nakhon/kafka/data"),
        help="the broker's log.dirs, readable from here (default: the local stack's)",
    )
    p.add_argument("--skip-db", action="store_true", help="no TimescaleDB measurement")
    p.add_argument("--skip-kafka", action="store_true", help="no Kafka measurement")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = p.parse_args(argv)
    if not 1 <= args.metrics <= len(METRICS):
        p.error(f"--metrics must be 1-{len(METRICS)}")
    if min(args.sensors, args.minutes, args.kafka_messages) < 1:
        p.error("--sensors, --minutes and --kafka-messages must be positive")
    return args


# TimescaleDB ---------------------------------------------------------------------


def _sizes(conn: psycopg.Connection[Any], table: sql.Identifier) -> dict[str, int]:
    row = conn.execute(
        sql.SQL(
            "SELECT table_bytes, index_bytes, toast_bytes, total_bytes"
            " FROM hypertable_detailed_size({})"
        ).format(sql.Literal(table.as_string(conn))),
    ).fetchone()
    assert row is not None
    rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    assert rows is not None
    keys = ("table_bytes", "index_bytes", "toast_bytes", "total_bytes")
    out = {k: int(v or 0) for k, v in zip(keys, row, strict=True)}
    out["rows"] = int(rows[0])
    return out


def _per_row(sizes: dict[str, int]) -> dict[str, float]:
    n = max(sizes["rows"], 1)
    return {
        "heap": sizes["table_bytes"] / n,
        "indexes": sizes["index_bytes"] / n,
        "toast": sizes["toast_bytes"] / n,
        "total": sizes["total_bytes"] / n,
    }


def _chunk_interval(conn: psycopg.Connection[Any], table: str) -> timedelta:
    row = conn.execute(
        "SELECT time_interval FROM timescaledb_information.dimensions"
        " WHERE hypertable_schema = 'public' AND hypertable_name = %s",
        (table,),
    ).fetchone()
    if row is None or row[0] is None:
        raise SystemExit(f"public.{table} is not a hypertable: run nakhon migrate first")
    interval: timedelta = row[0]
    return interval


def _make_like(conn: psycopg.Connection[Any], schema: str, table: str, time_column: str) -> None:
    conn.execute(
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
            sql.Identifier(schema, table), sql.Identifier("public", table)
        )
    )
    conn.execute(
        "SELECT create_hypertable(%s::regclass, %s, chunk_time_interval => %s)",
        (f"{schema}.{table}", time_column, _chunk_interval(conn, table)),
    )


def measure_db(settings: Settings, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    schema = f"nakhon_sizing_{os.getpid()}"
    metrics = list(METRICS)[: args.metrics]
    out: dict[str, Any] = {"schema": schema}
    with psycopg.connect(settings.db.dsn.get_secret_value(), autocommit=True) as conn:
        edition = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
        version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        out["timescaledb"] = {
            "version": version[0] if version else None,
            "edition": edition[0] if edition else None,
        }
        has_rollup_tables = all(
            conn.execute("SELECT to_regclass(%s)", (f"public.{t}",)).fetchone() != (None,)
            for t in ROLLUPS
        )
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            _make_like(conn, schema, "readings", "time")
            if has_rollup_tables:
                for t in ROLLUPS:
                    _make_like(conn, schema, t, "bucket")
            readings = sql.Identifier(schema, "readings")
            # Sensor ids and cities as the simulator names them; values in each
            # metric's range at the precision devices send.
            from nakhon.simulator.fleet import build_fleet

            fleet = build_fleet(args.sensors)
            ids = [s.sensor_id for s in fleet]
            cities = [s.city.slug for s in fleet]
            lows = [METRICS[m][0] for m in metrics]
            highs = [METRICS[m][1] for m in metrics]
            digits = [METRICS[m][2] for m in metrics]
            start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(
                minutes=args.minutes
            )
            began = time.monotonic()
            # In batches of a few minutes, in arrival order, as the processors write.
            step = max(1, 200_000 // (args.sensors * len(metrics)))
            for first in range(0, args.minutes, step):
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (time, sensor_id, metric, value, city)"
                        " SELECT %(start)s + make_interval(mins => t), s.id, m.name,"
                        "  round((m.lo + random() * (m.hi - m.lo))::numeric, m.digits)::float8,"
                        "  s.city"
                        " FROM generate_series(%(first)s::int, %(last)s::int) AS t"
                        " CROSS JOIN unnest(%(ids)s::text[], %(cities)s::text[]) AS s(id, city)"
                        " CROSS JOIN unnest(%(metrics)s::text[], %(lows)s::float8[],"
                        "  %(highs)s::float8[], %(digits)s::int[]) AS m(name, lo, hi, digits)"
                        " ORDER BY t, s.id"
                    ).format(readings),
                    {
                        "start": start,
                        "first": first,
                        "last": min(first + step, args.minutes) - 1,
                        "ids": ids,
                        "cities": cities,
                        "metrics": metrics,
                        "lows": lows,
                        "highs": highs,
                        "digits": digits,
                    },
                )
            out["insert_s"] = round(time.monotonic() - began, 1)
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(readings))
            raw = _sizes(conn, readings)
            out["readings"] = raw | {"per_row": _per_row(raw)}
            log(f"readings: {raw['rows']:,} rows in {out['insert_s']} s")
            if has_rollup_tables:
                one_m, one_h = (sql.Identifier(schema, t) for t in ROLLUPS)
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} SELECT time_bucket(INTERVAL '1 minute', time),"
                        " sensor_id, metric, city, avg(value), min(value), max(value),"
                        " sum(value), count(*), last(value, time) FROM {}"
                        " GROUP BY 1, sensor_id, metric, city ORDER BY 1"
                    ).format(one_m, readings)
                )
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} SELECT time_bucket(INTERVAL '1 hour', bucket),"
                        " sensor_id, metric, city, sum(sum) / sum(count), min(min), max(max),"
                        " sum(sum), sum(count), last(last, bucket) FROM {}"
                        " GROUP BY 1, sensor_id, metric, city ORDER BY 1"
                    ).format(one_h, one_m)
                )
                for name, ident in (("readings_1m", one_m), ("readings_1h", one_h)):
                    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(ident))
                    s = _sizes(conn, ident)
                    out[name] = s | {"per_row": _per_row(s)}
            if out["timescaledb"]["edition"] == "timescale":
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE {} SET (timescaledb.compress,"
                        " timescaledb.compress_segmentby = 'sensor_id, metric',"
                        " timescaledb.compress_orderby = 'time DESC')"
                    ).format(readings)
                )
                conn.execute(
                    "SELECT compress_chunk(c) FROM show_chunks(%s::regclass) AS c",
                    (f"{schema}.readings",),
                )
                c = _sizes(conn, readings)
                out["readings_compressed"] = c | {"per_row": _per_row(c)}
            else:
                out["readings_compressed"] = None
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            log(f"dropped schema {schema}")
    return out


# Kafka ---------------------------------------------------------------------------


def _log_bytes(data_dir: Path, topic: str) -> int:
    """Bytes of the topic's segment files (.log), not the preallocated indexes."""
    return sum(
        f.stat().st_size
        for d in data_dir.glob(f"{topic}-*")
        if d.is_dir() and d.name.rsplit("-", 1)[1].isdigit() and d.name.rsplit("-", 1)[0] == topic
        for f in d.glob("*.log")
    )


async def _held_records(settings: Settings, topic: str, partitions: int) -> int:
    """Records Kafka holds in ``topic`` (end offset less log start offset, summed)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from nakhon.kafka_client import kafka_client_options

    consumer = AIOKafkaConsumer(**kafka_client_options(settings.kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        first = await consumer.beginning_offsets(tps)
        last = await consumer.end_offsets(tps)
        return sum(last[tp] - first[tp] for tp in tps)
    finally:
        await consumer.stop()


def _partitions(data_dir: Path, topic: str) -> int:
    return sum(
        1
        for d in data_dir.glob(f"{topic}-*")
        if d.is_dir()
        and d.name.rsplit("-", 1) == [topic, d.name.rsplit("-", 1)[1]]
        and d.name.rsplit("-", 1)[1].isdigit()
    )


async def measure_kafka(settings: Settings, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from nakhon.domain.raw_record import MqttMessage, raw_headers
    from nakhon.kafka_client import kafka_client_options, kafka_producer_options
    from nakhon.simulator.fleet import build_fleet, payload

    data_dir: Path = args.kafka_data_dir
    raw_topic = settings.kafka.raw_topic
    out: dict[str, Any] = {}
    partitions = _partitions(data_dir, raw_topic) or 6
    held = await _held_records(settings, raw_topic, partitions)
    raw_bytes = _log_bytes(data_dir, raw_topic)
    out[raw_topic] = {
        "records": held,
        "log_bytes": raw_bytes,
        "bytes_per_record": raw_bytes / held if held else None,
    }
    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    await admin.start()
    topics: list[str] = []
    fleet = build_fleet(1000)
    rng = random.Random(1)  # noqa: S311 (sample payloads, not secrets)
    now = datetime.now(UTC)
    out["scratch"] = []
    try:
        producer = AIOKafkaProducer(**kafka_producer_options(settings.kafka))
        await producer.start()
        try:
            # How full Kafka's record batches are decides the bytes per record:
            # a gateway sending one message at a time writes batches of one; one
            # under load fills them (up to its max_inflight, 10,000, in flight).
            for batch in KAFKA_BATCHES:
                n = args.kafka_messages if batch == 0 else min(args.kafka_messages, 2000 * batch)
                topic = f"nakhon.sizing-{os.getpid()}-{batch}"
                await admin.create_topics([NewTopic(topic, 1, 1)])
                topics.append(topic)
                value_bytes = header_bytes = key_bytes = 0
                pending = []
                for i in range(n):
                    sensor = fleet[i % len(fleet)]
                    body = payload(sensor, now + timedelta(minutes=i // len(fleet)), rng)
                    msg = MqttMessage(sensor.topic, body, 1, i % 65535 + 1, int(time.time() * 1e6))
                    headers = raw_headers(msg, "compose-1")
                    key = sensor.topic.encode()
                    value_bytes += len(body)
                    key_bytes += len(key)
                    header_bytes += sum(len(k) + len(v) for k, v in headers)
                    pending.append(await producer.send(topic, body, key=key, headers=headers))
                    if len(pending) >= (batch or 10_000):
                        await asyncio.gather(*pending)
                        pending.clear()
                await asyncio.gather(*pending)
                await asyncio.sleep(0.5)
                log_bytes = _log_bytes(data_dir, topic)
                out["scratch"].append(
                    {
                        "records_per_batch": batch or "full",
                        "records": n,
                        "log_bytes": log_bytes,
                        "bytes_per_record": log_bytes / n,
                        "payload_bytes_per_record": value_bytes / n,
                        "key_bytes_per_record": key_bytes / n,
                        "header_bytes_per_record": header_bytes / n,
                        "compression": settings.kafka.compression,
                    }
                )
                log(f"{topic}: {n:,} records, {log_bytes:,} B")
        finally:
            await producer.stop()
    finally:
        try:
            if topics:
                await admin.delete_topics(topics)
                log(f"deleted topics {', '.join(topics)}")
        finally:
            await admin.close()
    return out


# report ------------------------------------------------------------------------


def report(figures: dict[str, Any]) -> str:
    lines = []
    db = figures.get("db")
    if db:
        ts = db["timescaledb"]
        lines.append(f"TimescaleDB {ts['version']} ({ts['edition']} edition)")
        for name in ("readings", "readings_1m", "readings_1h", "readings_compressed"):
            s = db.get(name)
            if s is None:
                continue
            p = s["per_row"]
            lines.append(
                f"  {name:<20} {s['rows']:>10,} rows {s['total_bytes'] / 2**20:8.1f} MiB"
                f"  per row: {p['total']:6.1f} B (heap {p['heap']:.1f}, indexes {p['indexes']:.1f},"
                f" toast {p['toast']:.1f})"
            )
        if db.get("readings_compressed") is None:
            lines.append("  compression: not available on this edition (Apache); Community only")
    kafka = figures.get("kafka")
    if kafka:
        for s in kafka["scratch"]:
            lines.append(
                f"Kafka, {s['compression']}, {s['records_per_batch']!s:>4} records per batch:"
                f" {s['records']:>7,} records, {s['log_bytes']:>10,} B of segments ="
                f" {s['bytes_per_record']:6.1f} B/record (uncompressed: payload"
                f" {s['payload_bytes_per_record']:.1f} + key {s['key_bytes_per_record']:.1f}"
                f" + headers {s['header_bytes_per_record']:.1f} B)"
            )
        for topic, r in kafka.items():
            if topic != "scratch":
                per = r["bytes_per_record"]
                lines.append(
                    f"Kafka, {topic} as it stands: {r['records']:,} records,"
                    f" {r['log_bytes']:,} B = {per:.1f} B/record"
                    if per
                    else f"Kafka, {topic}: empty"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings()

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    figures: dict[str, Any] = {}
    if not args.skip_db:
        figures["db"] = measure_db(settings, args, log)
    if not args.skip_kafka:
        if not args.kafka_data_dir.is_dir():
            raise SystemExit(
                f"{args.kafka_data_dir}: not a directory (--kafka-data-dir: the broker's log.dirs)"
            )
        figures["kafka"] = asyncio.run(measure_kafka(settings, args, log))
    print(json.dumps(figures, indent=1, default=str) if args.json else report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
