"""``make chaos``: hurt one component mid-stream, bring it back, count what was stored.

For each disturbance (:mod:`tools.chaos.rows`), a fresh pipeline of its own
takes a stream of N readings (SenML packs of 5 from 200 sensors, each with
``mosquitto_pub -q 1``, spread over the publishing window); 30 % into the
window the component is hurt and brought back. Then: how many of the N rows
are stored, stored once (``count`` = ``count(DISTINCT (sensor_id, metric,
time))``), how long from the first publish to the last row, and how long the
flow stood still after the hurt. A reading acknowledged to its publisher
(PUBACK) and never stored is a loss; its publish time, against the moment of
the hurt, gives the loss window.

The architecture promises no loss for every row but Mosquitto ``kill -9``,
which loses what the broker had acknowledged and neither delivered nor saved
(docs/architecture.md, "Delivery guarantee"): there the loss is measured and
reported, and only a duplicate fails the run. Exit status 1 when a promise is
broken, or a row could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from nakhon.cli import configure_logging
from nakhon.config import load_settings
from tools.bench.end_to_end import cleanup
from tools.chaos.flow import FlowWatch, final_counts
from tools.chaos.rows import ROWS, Disturbance, Rig, close_rig, open_rig
from tools.chaos.stream import READINGS_PER_PACK, Stream
from tools.sandbox import SandboxError

log = logging.getLogger("tools.chaos")
#: Where in the publishing window the component is hurt.
HURT_AT = 0.3
#: A flow that has stood still this long, with every pack acknowledged and
#: Kafka drained, is over: what is missing is lost.
STEADY_S = 15.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.chaos",
        description=(
            "For each disturbance, publish N readings with mosquitto_pub -q 1 through a pipeline "
            "of its own, hurt one component mid-stream, bring it back, and count the rows stored "
            "(exactly once?), how long it took, and how long the flow stood still. Prints a "
            "table and writes JSON."
        ),
    )
    p.add_argument("--readings", type=int, default=100_000, help="readings per row (packs of 5)")
    p.add_argument("--sensors", type=int, default=200, help="publishing sensors per row")
    p.add_argument("--seconds", type=float, default=10.0, help="publishing window per row")
    p.add_argument(
        "--only",
        action="append",
        choices=[r.name for r in ROWS],
        metavar="ROW",
        help=f"run this row only (repeatable): {', '.join(r.name for r in ROWS)}",
    )
    p.add_argument(
        "--group",
        action="append",
        choices=sorted({r.group for r in ROWS}),
        help=(
            "run this group's rows only (repeatable): single (one gateway, one processor, one"
            " Kafka), cluster (3 Kafka nodes, 2 gateways, 3 processors); default: both"
        ),
    )
    p.add_argument(
        "--postgres",
        action="store_true",
        help="also run postgres-stop: it stops the stack's PostgreSQL for 30 s",
    )
    p.add_argument(
        "--json", type=Path, default=Path("bench-results/chaos.json"), help="where to write JSON"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.readings < READINGS_PER_PACK * args.sensors:
        print(f"--readings: at least {READINGS_PER_PACK * args.sensors}", file=sys.stderr)
        return 2
    settings = load_settings()
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    # Kafka away is the point of a row: its clients' connection errors are expected.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    report = asyncio.run(_chaos(args, settings.db.dsn.get_secret_value()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nJSON: {args.json}")
    return 0 if all(r.get("ok") for r in report["rows"]) else 1


@dataclass(frozen=True)
class RowResult:
    row: str
    title: str
    readings: int
    stored: int
    distinct: int
    acknowledged: int
    #: Readings acknowledged to their publisher (PUBACK) and not stored.
    lost: int
    #: Readings still without a PUBACK after every resend (not stored either, most likely).
    unacknowledged: int
    #: Packs a fresh publisher sent again, after the first ended without their PUBACK.
    resent_packs: int
    #: Records in the rig's dead-letter topic: the stream is valid, so none belong there.
    dead_letters: int
    #: Publish times of the lost readings, from the moment of the hurt (ms), when any.
    loss_window_ms: tuple[float, float] | None
    hurt_at_s: float
    #: From the hurt until the component was back (restarted, answering).
    away_s: float
    #: From the first publish to the last row.
    duration_s: float | None
    #: The longest time after the hurt with no new row stored.
    held_up_s: float | None
    notes: tuple[str, ...]
    ok: bool


async def _chaos(args: argparse.Namespace, dsn: str) -> dict[str, Any]:
    readings = args.readings - args.readings % READINGS_PER_PACK
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "readings": readings,
        "sensors": args.sensors,
        "publish_seconds": args.seconds,
        "rows": [],
        "skipped": [],
    }
    for row in ROWS:
        if args.only and row.name not in args.only:
            continue
        if args.group and row.group not in args.group:
            continue
        if row.opt_in and not args.postgres:
            reason, flag = row.opt_in
            report["skipped"].append({"row": row.name, "reason": f"{reason}; run with {flag}"})
            continue
        print(f"  {row.name}: {row.title} ...", file=sys.stderr, flush=True)
        try:
            result = await run_row(row, readings, args, dsn)
        except (SandboxError, subprocess.SubprocessError, OSError, psycopg.Error) as exc:
            log.error("row %s could not run: %s", row.name, exc)
            report["rows"].append({"row": row.name, "title": row.title, "error": str(exc)})
            continue
        report["rows"].append(asdict(result))
    return report


async def run_row(row: Disturbance, readings: int, args: argparse.Namespace, dsn: str) -> RowResult:
    rig = await open_rig(row)
    try:
        return await _stream_and_hurt(row, rig, readings, args, dsn)
    finally:
        close_rig(rig)
        cleanup(rig.ns, dsn)


async def _stream_and_hurt(
    row: Disturbance, rig: Rig, readings: int, args: argparse.Namespace, dsn: str
) -> RowResult:
    stream = Stream(rig.ns, readings, args.sensors)
    watch = FlowWatch(dsn, stream.sensor_prefix)
    stop = asyncio.Event()
    watching = asyncio.create_task(watch.run(stop))
    try:
        started = time.monotonic()
        publishing = asyncio.ensure_future(
            asyncio.to_thread(stream.publish, rig.mqtt_port, args.seconds)
        )
        await asyncio.sleep(args.seconds * HURT_AT)
        hurt_at = time.monotonic()
        try:
            await row.hurt(rig)
        finally:
            back_at = time.monotonic()
            await publishing
        await asyncio.to_thread(stream.resend_unacknowledged, rig.mqtt_port)
        await _settle(watch, stream, rig)
        dead_letters = len(await rig.ns.all_dead_letters())
    finally:
        stop.set()
        await watching
    stored = final_counts(dsn, stream)
    lost_packs = [p for p in stream.acknowledged if stored.by_pack.get(p, 0) < READINGS_PER_PACK]
    lost = sum(READINGS_PER_PACK - stored.by_pack.get(p, 0) for p in lost_packs)
    window = None
    if lost_packs:
        offsets = [(stream.sent_at[p] - hurt_at) * 1000 for p in lost_packs]
        window = (round(min(offsets), 1), round(max(offsets), 1))
    completed = watch.completed_at()
    unacknowledged = (stream.packs - len(stream.acknowledged)) * READINGS_PER_PACK
    ok = (
        stored.rows == stored.distinct
        and dead_letters == 0
        and (row.name == "mosquitto-kill" or (lost == 0 and unacknowledged == 0))
    )
    return RowResult(
        row=row.name,
        title=row.title,
        readings=readings,
        stored=stored.rows,
        distinct=stored.distinct,
        acknowledged=len(stream.acknowledged) * READINGS_PER_PACK,
        lost=lost,
        unacknowledged=unacknowledged,
        resent_packs=stream.resent,
        dead_letters=dead_letters,
        loss_window_ms=window,
        hurt_at_s=round(hurt_at - started, 2),
        away_s=round(back_at - hurt_at, 2),
        duration_s=round(completed - started, 2) if completed else None,
        held_up_s=round(watch.longest_stall(hurt_at, completed), 2) if completed else None,
        notes=tuple(rig.notes),
        ok=ok,
    )


async def _settle(watch: FlowWatch, stream: Stream, rig: Rig, timeout_s: float = 300) -> None:
    """Until every row is in, or the flow has stood still for STEADY_S with Kafka drained."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if watch.latest >= stream.readings:
            return
        if time.monotonic() - watch.steady_since() > STEADY_S and await rig.ns.caught_up():
            return
        await asyncio.sleep(0.5)
    rig.notes.append(f"rows still missing {timeout_s:.0f} s after the last publish")


def print_table(report: dict[str, Any]) -> None:
    n = report["readings"]
    print(
        f"\nNakhon chaos, {report['when']}: {n:,} readings a row (SenML packs of 5 from"
        f" {report['sensors']} sensors, mosquitto_pub -q 1, over {report['publish_seconds']:g} s),"
        f" the component hurt {HURT_AT:.0%} into the window\n"
    )
    print(
        f"  {'row':<22} {'stored of N':>21} {'distinct':>9} {'lost':>6}"
        f" {'duration':>9} {'held up':>8} {'away':>7}  ok"
    )
    for r in report["rows"]:
        if "error" in r:
            print(f"  {r['row']:<22} could not run: {r['error']}")
            continue
        stored = f"{r['stored']:,} / {r['readings']:,}"
        print(
            f"  {r['row']:<22} {stored:>21} {r['distinct']:>9,} {r['lost']:>6,}"
            f" {_s(r['duration_s']):>9} {_s(r['held_up_s']):>8} {_s(r['away_s']):>7}"
            f"  {'yes' if r['ok'] else 'NO'}"
        )
    print(
        "\n  lost: acknowledged to the publisher (PUBACK) and not stored; held up: the longest"
        "\n  time after the hurt with no new row; away: from the hurt until the component was back."
    )
    for r in report["rows"]:
        if "error" in r:
            continue
        if r["loss_window_ms"]:
            first, last = r["loss_window_ms"]
            print(
                f"  {r['row']}: {r['lost']:,} readings lost, published {first:+,.0f} ms to"
                f" {last:+,.0f} ms from the hurt"
            )
        if r["unacknowledged"]:
            print(f"  {r['row']}: {r['unacknowledged']:,} readings never acknowledged")
        if r.get("dead_letters"):
            print(f"  {r['row']}: {r['dead_letters']:,} dead letters (none expected)")
        for note in r["notes"]:
            print(f"  {r['row']}: {note}")
    for s in report["skipped"]:
        print(f"  {s['row']}: skipped: {s['reason']}")


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"
