"""``nakhon replay deadletters|raw``: put records back through the pipeline.

Both produce onto the raw topic (NAKHON_KAFKA_RAW_TOPIC) records that carry
the original key, bytes and ``received_at``: the processors decode, judge and
store them as if they had arrived then. The readings' unique key (sensor,
metric, time) makes a replay idempotent: a reading already stored is not
stored again, nor changed (the first value wins). ``replay raw --overwrite``
is the exception, run in this process as the schema owner
(:mod:`nakhon.replay.overwrite`).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from paho.mqtt.client import topic_matches_sub

from nakhon.config import KafkaSettings, Settings
from nakhon.domain.raw_record import parse_headers
from nakhon.kafka_client import KafkaSecurityError, kafka_producer_options
from nakhon.replay.deadletters_command import (
    add_filter_arguments,
    add_window_arguments,
    filter_of,
    start,
)
from nakhon.replay.letters import REPLAYED_FROM, TopicNames, read_letter
from nakhon.replay.overwrite import OverwriteReport, overwrite_range
from nakhon.replay.topic_reader import ReadProgress, TopicReadError, read_topic
from nakhon.replay.wait import (
    WaitTimeoutError,
    new_run_id,
    rejected_again,
    run_tag,
    wait_for_group,
)
from nakhon.replay.window import TimeWindow

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_KAFKA = 3
EXIT_WAIT_TIMEOUT = 4
EXIT_DATABASE = 5
#: Records handed to the producer before their acknowledgements are awaited.
_IN_FLIGHT = 2000

_IDEMPOTENT = (
    "rows are idempotent: a reading already stored (same sensor, metric and time) is "
    "neither stored again nor changed, so a second replay stores nothing new"
)

_DEADLETTERS_HELP = """\
Produce the selected dead letters' original records back onto the raw topic
(NAKHON_KAFKA_RAW_TOPIC): same key and bytes, headers mqtt_topic and the
original received_at (so the time policy judges them as at arrival), gateway,
qos and content_type where the letter has them, and replayed_from. The
processors then store them like any record, or reject them again (a new dead
letter). Fix the cause first: register the sensor or city, add the alias.

Letters without their whole payload (payload_too_large, truncated or
header-only letters) are skipped and counted; letters repeated in the topic
(same topic, received_at and bytes) are sent once. --since/--until select by
the time the letter was written. Progress (read, selected, sent) on stderr,
a summary by outcome on stdout.

--wait then waits (progress on stderr, at most --wait-timeout s) until the
processors' consumer group (NAKHON_KAFKA_CONSUMER_GROUP) has committed past the
records sent, reads the dead letters written since the replay began, and
prints "sent N, stored or already stored N-R, rejected again R (by reason ...)":
each replayed record's replayed_from names this run, and the processors copy
it into any dead letter they make of it.

Exit codes: 0 done; 2 invalid arguments; 3 Kafka unreachable or a topic
missing; 4 --wait timed out."""

_RAW_HELP = """\
Produce the raw topic's records of a time range (their Kafka time, i.e. the
gateway's) back onto it, e.g. after a decoder fix; --topic keeps only MQTT
topics matching an MQTT filter (+ and #). The copies keep key, bytes and
headers (received_at is the original), so a reading is judged as at arrival;
they are new records, at today's Kafka time, outside the range replayed.

Stored rows follow the unique key (sensor, metric, time), first value wins: a
reading already stored is NOT changed even if the new decoder reads another
value from the same payload; only readings not stored before (rejected, or
missed by the old decoder) are added.

--overwrite: make stored values follow the current decoder. Nothing is sent
to Kafka and the processors are not involved: this command reads the same
selection of the raw topic itself, runs each record through the processors'
pipeline in this process (route, decode, normalize, enrich, configured by the
same NAKHON_PROCESSOR_* settings, registry as of the start), and upserts the
rows as the schema owner (NAKHON_DB_DSN, the credentials of `nakhon migrate`;
the processors' role may not update readings) in batches of 5,000: a missing
reading is inserted, one stored with another value (or city) is updated, one
stored with the same value is left alone. Positions likewise. A key read
twice in the range takes the record read last. Records the pipeline rejects
are counted by reason, not dead-lettered. Progress on stderr; the counts
(records read/selected/accepted/rejected; readings and positions inserted,
changed, unchanged; rejections by reason) on stdout. Then readings_1m and
readings_1h are refreshed over the time range of the rows inserted or
changed. With --dry-run each batch runs in a transaction that is rolled back:
the counts say what would change, nothing is written. Running it twice
changes 0 rows the second time.

--wait: as for `replay deadletters` (see its help); not with --overwrite.

Exit codes: 0 done; 2 invalid arguments; 3 Kafka unreachable or a topic
missing; 4 --wait timed out; 5 (--overwrite) the database unreachable or
refusing the rows (batches committed before stay: run it again)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="put dead letters or a time range of raw records back through the pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = p.add_subparsers(title="commands", metavar="COMMAND", required=True)

    letters = commands.add_parser(
        "deadletters",
        help="send selected dead letters back to nakhon.raw",
        description=_DEADLETTERS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_window_arguments(letters)
    add_filter_arguments(letters)
    letters.add_argument("--dry-run", action="store_true", help="count, produce nothing")
    add_wait_arguments(letters)
    letters.set_defaults(func=run_replay_deadletters)

    raw = commands.add_parser(
        "raw",
        help="re-produce a time range of nakhon.raw onto it (after a decoder fix)",
        description=_RAW_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    raw.add_argument("--since", metavar="T", required=True, help="from this time (ISO 8601 or 6h)")
    raw.add_argument("--until", metavar="T", required=True, help="up to this time (same forms)")
    raw.add_argument("--topic", metavar="FILTER", help="only MQTT topics matching this filter")
    raw.add_argument("--dry-run", action="store_true", help="count, produce nothing")
    raw.add_argument(
        "--overwrite",
        action="store_true",
        help="decode the range here and update stored values that now read differently "
        "(as the schema owner; see above)",
    )
    add_wait_arguments(raw)
    raw.set_defaults(func=run_replay_raw)


def add_wait_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait until the processors have taken what was sent, then count what was "
        "rejected again",
    )
    p.add_argument(
        "--wait-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds --wait waits at most (default 300)",
    )


@dataclass
class RecordSender:
    """Produces records onto ``topic`` (or, in a dry run, only counts them).

    Sends are pipelined up to :data:`_IN_FLIGHT` records; ``sent`` counts
    those Kafka acknowledged. A failed send raises (KafkaError): the summary
    printed then says how many went before it.
    """

    kafka: KafkaSettings
    topic: str
    dry_run: bool
    sent: int = 0
    #: The highest offset Kafka returned for a send, by partition of ``topic``.
    last_offsets: dict[int, int] = field(default_factory=dict)
    _producer: AIOKafkaProducer | None = None
    _pending: list[Awaitable[Any]] = field(default_factory=list)

    async def start(self) -> None:
        if not self.dry_run:
            self._producer = AIOKafkaProducer(**kafka_producer_options(self.kafka))
            await self._producer.start()

    async def send(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        if self._producer is None:
            self.sent += 1
            return
        self._pending.append(
            await self._producer.send(self.topic, value=value, key=key, headers=headers)
        )
        if len(self._pending) >= _IN_FLIGHT:
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        for delivery in pending:
            metadata = await delivery
            self.sent += 1
            partition, offset = metadata.partition, metadata.offset
            if offset > self.last_offsets.get(partition, -1):
                self.last_offsets[partition] = offset

    async def stop(self) -> None:
        if self._producer is not None:
            try:
                await self.flush()
            finally:
                await self._producer.stop()


def run_replay_deadletters(args: argparse.Namespace) -> int:
    return _run(args, _replay_deadletters)


def run_replay_raw(args: argparse.Namespace) -> int:
    if args.overwrite:
        return _run_overwrite(args)
    return _run(args, _replay_raw)


def _run_overwrite(args: argparse.Namespace) -> int:
    if args.wait:
        print("nakhon replay: --wait has nothing to wait for with --overwrite", file=sys.stderr)
        return EXIT_INVALID
    begun = start(args, "nakhon replay")
    if begun is None:
        return EXIT_INVALID
    settings, window = begun
    if args.topic is not None and not valid_filter(args.topic):
        print(f"nakhon replay: --topic {args.topic!r} is not an MQTT topic filter", file=sys.stderr)
        return EXIT_INVALID
    report = OverwriteReport(settings.kafka.raw_topic, args.dry_run)

    def selects(mqtt_topic: str) -> bool:
        return not args.topic or _matches(mqtt_topic, args.topic)

    try:
        asyncio.run(overwrite_range(settings, window, selects, report))
    except (KafkaError, KafkaSecurityError, TopicReadError) as exc:
        print(report.text(), file=sys.stderr)
        print(f"nakhon replay: stopped: {exc}", file=sys.stderr)
        return EXIT_KAFKA
    except psycopg.Error as exc:
        print(report.text(), file=sys.stderr)
        print(f"nakhon replay: stopped, database: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    print(report.text(), flush=True)
    return EXIT_OK


def _run(args: argparse.Namespace, body: Any) -> int:
    begun = start(args, "nakhon replay")
    if begun is None:
        return EXIT_INVALID
    settings, window = begun
    if getattr(args, "topic", None) is not None and not valid_filter(args.topic):
        print(f"nakhon replay: --topic {args.topic!r} is not an MQTT topic filter", file=sys.stderr)
        return EXIT_INVALID
    outcomes: Counter[str] = Counter(read=0, selected=0, sent=0)
    run_id = new_run_id()
    started = datetime.now(UTC)
    try:
        sender = asyncio.run(body(settings, window, args, outcomes, run_tag(run_id)))
    except (KafkaError, KafkaSecurityError, TopicReadError) as exc:
        print(summary(outcomes, settings.kafka.raw_topic, args.dry_run), file=sys.stderr)
        print(f"nakhon replay: stopped: {exc}", file=sys.stderr)
        return EXIT_KAFKA
    print(summary(outcomes, settings.kafka.raw_topic, args.dry_run), flush=True)
    if not args.wait or args.dry_run:
        return EXIT_OK
    try:
        verdict = asyncio.run(_wait(settings, sender, run_id, started, args.wait_timeout))
    except WaitTimeoutError as exc:
        print(f"nakhon replay: {exc}", file=sys.stderr)
        return EXIT_WAIT_TIMEOUT
    except (KafkaError, KafkaSecurityError, TopicReadError) as exc:
        print(f"nakhon replay: --wait stopped: {exc}", file=sys.stderr)
        return EXIT_KAFKA
    print(verdict)
    return EXIT_OK


async def _wait(
    settings: Settings, sender: RecordSender, run_id: str, started: datetime, timeout_s: float
) -> str:
    """Wait for the processors to take ``sender``'s records; the one-line verdict."""
    await wait_for_group(settings.kafka, sender.last_offsets, timeout_s)
    # A second of slack for the clocks of the processor's host and this one.
    since = started - timedelta(seconds=1)
    return (await rejected_again(settings.kafka, run_id, since, sender.sent)).line()


async def _replay_deadletters(
    settings: Settings,
    window: TimeWindow,
    args: argparse.Namespace,
    outcomes: Counter[str],
    tag: str,
) -> RecordSender:
    source = settings.kafka.deadletter_topic
    names = TopicNames(settings.processor.routes)
    wanted = filter_of(args)
    progress = ReadProgress(source, counts=outcomes)
    sender = RecordSender(settings.kafka, settings.kafka.raw_topic, args.dry_run)
    seen: set[bytes] = set()
    await sender.start()
    try:
        async for record in read_topic(settings.kafka, source, window, progress):
            outcomes["read"] += 1
            letter = read_letter(record, names)
            if not wanted.matches(letter):
                continue
            outcomes["selected"] += 1
            if skip := letter.skip_reason():
                outcomes[skip] += 1
                continue
            key, value, headers = letter.raw_record(source, tag)
            fingerprint = _fingerprint(letter.mqtt_topic, letter.headers["received_at"], value)
            if fingerprint in seen:
                outcomes["duplicate_letter"] += 1
                continue
            seen.add(fingerprint)
            await sender.send(key, value, headers)
            outcomes["sent"] = sender.sent
    finally:
        await sender.stop()
        outcomes["sent"] = sender.sent
        progress.tick(force=True)
    return sender


async def _replay_raw(
    settings: Settings,
    window: TimeWindow,
    args: argparse.Namespace,
    outcomes: Counter[str],
    tag: str,
) -> RecordSender:
    topic = settings.kafka.raw_topic
    progress = ReadProgress(topic, counts=outcomes)
    sender = RecordSender(settings.kafka, topic, args.dry_run)
    await sender.start()
    try:
        async for record in read_topic(settings.kafka, topic, window, progress):
            outcomes["read"] += 1
            headers = list(record.headers or ())
            mqtt_topic = parse_headers(headers).get("mqtt_topic") or (record.key or b"").decode(
                "utf-8", "replace"
            )
            if args.topic and not _matches(mqtt_topic, args.topic):
                continue
            outcomes["selected"] += 1
            origin = f"{topic}/{record.partition}/{record.offset}{tag}".encode()
            headers = [(k, v) for k, v in headers if k != REPLAYED_FROM]
            await sender.send(
                record.key or b"", record.value or b"", [*headers, (REPLAYED_FROM, origin)]
            )
            outcomes["sent"] = sender.sent
    finally:
        await sender.stop()
        outcomes["sent"] = sender.sent
        progress.tick(force=True)
    return sender


def _matches(topic: str, mqtt_filter: str) -> bool:
    try:
        return bool(topic_matches_sub(mqtt_filter, topic))
    except ValueError:  # paho refuses a malformed filter or topic
        return False


def valid_filter(mqtt_filter: str) -> bool:
    """An MQTT topic filter: ``+`` alone in a level, ``#`` alone in the last one."""
    levels = mqtt_filter.split("/")
    return (
        bool(mqtt_filter)
        and all(level in ("+", "#") or ("+" not in level and "#" not in level) for level in levels)
        and "#" not in levels[:-1]
    )


def _fingerprint(topic: str, received_at: str, value: bytes) -> bytes:
    digest = hashlib.blake2b(value, digest_size=16)
    digest.update(b"\0" + topic.encode("utf-8", "replace") + b"\0" + received_at.encode())
    return digest.digest()


def summary(outcomes: Counter[str], raw_topic: str, dry_run: bool) -> str:
    """The outcome counts, then one sentence on what was sent and what it does."""
    lines = [f"  {name:<24}{n:>10,}" for name, n in outcomes.items() if name != "sent"]
    sent = outcomes["sent"]
    if dry_run:
        lines.append(f"dry run: would send {sent:,} to {raw_topic}; nothing produced")
    else:
        lines.append(f"sent {sent:,} to {raw_topic}; {_IDEMPOTENT}")
    return "\n".join(["replay summary:", *lines])
