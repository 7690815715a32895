"""``nakhon deadletters stats|show``: what the pipeline refused, and why."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from contextlib import aclosing
from typing import Any

from aiokafka.errors import KafkaError

from nakhon.cli import configure_logging
from nakhon.config import Settings, load_settings
from nakhon.kafka_client import KafkaSecurityError
from nakhon.replay.letters import (
    DeadLetterView,
    LetterFilter,
    TopicNames,
    escape_bytes,
    escape_text,
    read_letter,
)
from nakhon.replay.stats import LetterStats
from nakhon.replay.topic_reader import ReadProgress, TopicReadError, read_topic
from nakhon.replay.window import TIME_HELP, TimeSpecError, TimeWindow, format_ms, parse_time

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_KAFKA = 3
#: Bytes of a payload ``show`` prints, escaped.
SHOWN_PAYLOAD_BYTES = 200

_DESCRIPTION = """\
Read the dead-letter topic (NAKHON_KAFKA_DEADLETTER_TOPIC, nakhon.deadletter)
from its beginning, or from --since, to its end as of now, outside any consumer
group (nothing is committed). Times are those of the Kafka records (when the
letter was written); 'received' is the original arrival. Progress goes to
stderr. Exit codes: 0 done; 2 invalid arguments; 3 Kafka unreachable or the
topic missing."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "deadletters",
        help="what was rejected and why: counts and samples of nakhon.deadletter",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = p.add_subparsers(title="commands", metavar="COMMAND", required=True)

    stats = commands.add_parser(
        "stats",
        help="counts by reason, stage, city and sensor, and the time range covered",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_window_arguments(stats)
    stats.add_argument("--top", type=int, default=10, metavar="N", help="cities and sensors shown")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(func=run_stats)

    show = commands.add_parser(
        "show",
        help="sample letters with their detail and the first bytes of the payload",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_window_arguments(show)
    add_filter_arguments(show)
    show.add_argument("--limit", type=int, default=10, metavar="N", help="letters shown")
    show.add_argument("--json", action="store_true", help="print JSON lines")
    show.set_defaults(func=run_show)


def add_window_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", metavar="T", help=f"from this time: {TIME_HELP}")
    p.add_argument("--until", metavar="T", help="up to this time (same forms)")


def add_filter_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reason", action="append", default=[], metavar="R", help="only this reason (repeatable)"
    )
    p.add_argument(
        "--sensor", action="append", default=[], metavar="S", help="only this sensor (repeatable)"
    )


def window_of(args: argparse.Namespace) -> TimeWindow:
    """The ``--since``/``--until`` of ``args``; raises :class:`TimeSpecError`."""
    return TimeWindow(
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
    )


def filter_of(args: argparse.Namespace) -> LetterFilter:
    return LetterFilter(
        reasons=frozenset(args.reason), sensors=frozenset(s.lower() for s in args.sensor)
    )


def run_stats(args: argparse.Namespace) -> int:
    return _run(args, _stats)


def run_show(args: argparse.Namespace) -> int:
    return _run(args, _show)


def start(args: argparse.Namespace, prog: str) -> tuple[Settings, TimeWindow] | None:
    """Settings, logging and the time window every dead-letter and replay command begins with;
    None (after saying why on stderr) when ``--since``/``--until`` do not parse."""
    settings = load_settings()
    configure_logging(settings.log_level)
    # The client's connection chatter would drown the progress lines.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        return settings, window_of(args)
    except TimeSpecError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace, body: Any) -> int:
    started = start(args, "nakhon deadletters")
    if started is None:
        return EXIT_INVALID
    settings, window = started
    try:
        asyncio.run(body(settings, window, args))
    except (KafkaError, KafkaSecurityError, TopicReadError) as exc:
        print(f"nakhon deadletters: {exc}", file=sys.stderr)
        return EXIT_KAFKA
    return EXIT_OK


async def _stats(settings: Settings, window: TimeWindow, args: argparse.Namespace) -> None:
    topic = settings.kafka.deadletter_topic
    names = TopicNames(settings.processor.routes)
    stats = LetterStats(topic)
    progress = ReadProgress(topic)
    async for record in read_topic(settings.kafka, topic, window, progress):
        stats.add(read_letter(record, names))
    if args.json:
        print(json.dumps(stats.as_json(args.top), indent=2))
    else:
        print(stats.as_text(args.top))


async def _show(settings: Settings, window: TimeWindow, args: argparse.Namespace) -> None:
    topic = settings.kafka.deadletter_topic
    names = TopicNames(settings.processor.routes)
    wanted = filter_of(args)
    progress = ReadProgress(topic)
    shown = 0
    # Closed on leaving: the consumer stops as soon as the sample is complete.
    async with aclosing(read_topic(settings.kafka, topic, window, progress)) as records:
        async for record in records:
            letter = read_letter(record, names)
            if not wanted.matches(letter):
                continue
            print(json.dumps(letter_json(letter)) if args.json else letter_text(letter))
            shown += 1
            if shown >= args.limit:
                break
    if shown == 0:
        print("no dead letter matches", file=sys.stderr)


def letter_json(letter: DeadLetterView) -> dict[str, Any]:
    return {
        "time": format_ms(letter.timestamp_ms),
        "partition": letter.partition,
        "offset": letter.offset,
        "reason": letter.reason,
        "reasons": list(letter.reasons),
        "stage": letter.stage,
        "detail": letter.detail,
        "mqtt_topic": letter.mqtt_topic,
        "city": letter.city,
        "sensor_id": letter.sensor_id,
        "received_at": letter.headers.get("received_at"),
        "truncated": letter.headers.get("truncated") == "true",
        "payload_bytes": len(letter.value),
        "payload_head": escape_bytes(letter.value[:SHOWN_PAYLOAD_BYTES]),
    }


def letter_text(letter: DeadLetterView) -> str:
    more = len(letter.value) - SHOWN_PAYLOAD_BYTES
    head = escape_bytes(letter.value[:SHOWN_PAYLOAD_BYTES])
    replay = letter.skip_reason() or "replayable"
    return "\n".join(
        [
            f"{format_ms(letter.timestamp_ms)}  {letter.partition}/{letter.offset}  "
            f"{escape_text(', '.join(letter.reasons))} (stage {escape_text(letter.stage)})  "
            f"{replay}",
            f"  topic   {escape_text(letter.mqtt_topic)}  "
            f"(city {letter.city or '?'}, sensor {letter.sensor_id or '?'})",
            f"  detail  {escape_text(letter.detail)}",
            f"  payload {len(letter.value):,} bytes: {head}"
            + (f" ... (+{more:,})" if more > 0 else ""),
        ]
    )
