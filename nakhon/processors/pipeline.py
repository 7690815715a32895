"""One raw record through route -> decode -> normalize -> enrich: pure, no I/O.

The processor calls :func:`process_batch` on each Kafka batch and gets back
everything it must make durable before committing the batch's offsets: rows
for TimescaleDB, dead letters for ``nakhon.deadletter``, readings for
``nakhon.readings``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from nakhon.domain.records import Position, RawRecord, Reading, Rejection, Stage
from nakhon.processors.codecs.base import DecodeError
from nakhon.processors.enrich import SensorDirectory, enrich
from nakhon.processors.normalize import Normalized, NormalizePolicy, normalize
from nakhon.processors.routing import RouteError, Router

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A payload (or values of it) refused: the original record and every reason."""

    record: RawRecord
    rejections: tuple[Rejection, ...]
    #: True when nothing of the payload was stored.
    whole: bool


@dataclass(slots=True)
class RecordOutcome:
    record: RawRecord
    readings: list[Reading] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    unknown_metrics: list[str] = field(default_factory=list)
    #: Set when the payload as a whole was refused (route or decode).
    whole_rejection: bool = False


@dataclass(slots=True)
class BatchOutcome:
    outcomes: list[RecordOutcome]

    @property
    def readings(self) -> list[Reading]:
        return [r for o in self.outcomes for r in o.readings]

    @property
    def positions(self) -> list[Position]:
        return [p for o in self.outcomes for p in o.positions]

    def dead_letters(self) -> list[DeadLetter]:
        return [
            DeadLetter(o.record, tuple(o.rejections), o.whole_rejection)
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
        outcome = RecordOutcome(record)
        try:
            codec, ctx = self._router.route(record.mqtt_topic, record.received_at)
        except RouteError as exc:
            outcome.rejections.append(Rejection(exc.reason, exc.detail, Stage.ROUTE))
            outcome.whole_rejection = True
            return outcome
        try:
            decoded = codec.decode(record.payload, ctx)
            normalized: Normalized = normalize(decoded, ctx, self._policy)
            enrich(normalized, ctx, self.directory, strict=self._strict_sensors)
        except DecodeError as exc:
            outcome.rejections.append(
                Rejection(exc.reason, exc.detail, Stage.DECODE, sensor_id=ctx.sensor_id)
            )
            outcome.whole_rejection = True
            return outcome
        except Exception as exc:
            # A codec bug must not become a poison pill that stops the
            # partition: the payload goes to the dead letters with the error,
            # to be replayed from nakhon.raw once the codec is fixed.
            log.exception("codec %s failed on a payload of %s", codec.name, record.mqtt_topic)
            outcome.rejections.append(
                Rejection("codec_error", f"{type(exc).__name__}: {exc}"[:500], Stage.DECODE)
            )
            outcome.whole_rejection = True
            return outcome
        outcome.readings = normalized.readings
        outcome.positions = normalized.positions
        outcome.rejections = normalized.rejections
        outcome.unknown_metrics = normalized.unknown_metrics
        outcome.whole_rejection = bool(normalized.rejections) and not (
            normalized.readings or normalized.positions
        )
        return outcome

    def process_batch(self, records: Sequence[RawRecord]) -> BatchOutcome:
        return BatchOutcome([self.process(r) for r in records])
