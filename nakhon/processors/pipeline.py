"""One raw record through route -> decode -> normalize -> enrich: pure, no I/O.

The processor calls :func:`process_batch` on each Kafka batch and gets back
everything it must make durable before committing the batch's offsets: rows
for TimescaleDB, dead letters for ``nakhon.deadletter``, readings for
``nakhon.readings``. Outcomes are frozen: a later step that changes its mind
(the database refusing a payload's rows) builds a new outcome, so what the
pipeline said stays what it said.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from nakhon.domain.records import Position, RawRecord, Reading, Rejection, Stage
from nakhon.processors.codecs.base import DecodeError
from nakhon.processors.enrich import SensorDirectory, enrich
from nakhon.processors.normalize import Normalized, NormalizePolicy, normalize
from nakhon.processors.routing import RouteError, Router

log = logging.getLogger(__name__)

#: The reason a payload is dead-lettered with when a step raised something it
#: should not have (a bug, not the payload's fault), by the step that raised it.
BUG_REASONS = {
    Stage.DECODE: "codec_error",
    Stage.NORMALIZE: "normalize_error",
    Stage.ENRICH: "enrich_error",
}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A payload (or values of it) refused: the original record and every reason."""

    record: RawRecord
    rejections: tuple[Rejection, ...]
    #: True when nothing of the payload was stored.
    whole: bool


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What became of one raw record: rows to store, and why the rest was refused."""

    record: RawRecord
    readings: tuple[Reading, ...] = ()
    positions: tuple[Position, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    unknown_metrics: tuple[str, ...] = ()
    #: Set when nothing of the payload is stored (refused whole, or every value).
    whole_rejection: bool = False


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    outcomes: tuple[RecordOutcome, ...]

    @property
    def readings(self) -> list[Reading]:
        return [r for o in self.outcomes for r in o.readings]

    @property
    def positions(self) -> list[Position]:
        return [p for o in self.outcomes for p in o.positions]

    def dead_letters(self) -> list[DeadLetter]:
        return [
            DeadLetter(o.record, o.rejections, o.whole_rejection)
            for o in self.outcomes
            if o.rejections
        ]


class Pipeline:
    """Routes, decodes, normalizes and enriches raw records.

    ``directory`` is the registry snapshot enrichment reads; the processor
    refreshes it. An empty one registers no city, so every reading is
    rejected (``unknown_city``) until it is loaded.
    """

    def __init__(
        self,
        router: Router,
        policy: NormalizePolicy,
        directory: SensorDirectory | None = None,
        strict_sensors: bool = False,
    ) -> None:
        self._router = router
        self._policy = policy
        self.directory = directory if directory is not None else SensorDirectory()
        self._strict_sensors = strict_sensors

    def process(self, record: RawRecord) -> RecordOutcome:
        try:
            codec, ctx = self._router.route(record.mqtt_topic, record.received_at)
        except RouteError as exc:
            return _refused(record, Rejection(exc.reason, exc.detail, Stage.ROUTE))
        step = Stage.DECODE
        try:
            decoded = codec.decode(record.payload, ctx)
            step = Stage.NORMALIZE
            normalized: Normalized = normalize(decoded, ctx, self._policy)
            step = Stage.ENRICH
            enrich(normalized, ctx, self.directory, strict=self._strict_sensors)
        except DecodeError as exc:
            return _refused(
                record, Rejection(exc.reason, exc.detail, Stage.DECODE, sensor_id=ctx.sensor_id)
            )
        except Exception as exc:
            # A bug in a codec, in normalization or in enrichment must not
            # become a poison pill that stops the partition: the payload goes
            # to the dead letters with the error and the step that raised it,
            # to be replayed from nakhon.raw once the bug is fixed.
            log.exception(
                "%s failed on a payload of %s (codec %s)", step.value, record.mqtt_topic, codec.name
            )
            detail = f"{type(exc).__name__}: {exc}"[:500]
            return _refused(record, Rejection(BUG_REASONS[step], detail, step))
        return RecordOutcome(
            record,
            readings=tuple(normalized.readings),
            positions=tuple(normalized.positions),
            rejections=tuple(normalized.rejections),
            unknown_metrics=tuple(normalized.unknown_metrics),
            whole_rejection=bool(normalized.rejections)
            and not (normalized.readings or normalized.positions),
        )

    def process_batch(self, records: Sequence[RawRecord]) -> BatchOutcome:
        return BatchOutcome(tuple(self.process(r) for r in records))


def _refused(record: RawRecord, rejection: Rejection) -> RecordOutcome:
    """The outcome of a payload refused as a whole."""
    return RecordOutcome(record, rejections=(rejection,), whole_rejection=True)
