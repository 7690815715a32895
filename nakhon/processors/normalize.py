"""The one normalization step every codec's output goes through.

A codec says what a payload holds in the device's own words
(:class:`~nakhon.domain.records.Observation`, :class:`~nakhon.domain.records.PositionFix`);
:func:`normalize` turns that into canonical readings and validated positions,
or into a :class:`~nakhon.domain.records.Rejection` per bad value. One bad value never
costs the good values of the same payload.

"Now" is the time the gateway received the message (``ctx.received_at``), not
the processor's clock: a payload replayed from ``nakhon.raw`` weeks later after
a decoder fix is judged exactly as it was on arrival.

Rejection reasons (stable codes, :data:`REASONS`): ``invalid_sensor_id``,
``not_finite``, ``unknown_metric`` (strict mode only), ``unknown_unit``,
``out_of_range``, ``time_in_future``, ``time_too_old``, ``duplicate_reading``
(the same metric at the same time twice in one payload: the first is kept),
``null_island`` (a fix at exactly 0°, 0°: a GPS without a fix).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from nakhon.config import ProcessorSettings
from nakhon.domain.catalogue import METRICS, Metric, lookup_metric, name_key, unknown_metric_name
from nakhon.domain.identifiers import valid_sensor_id
from nakhon.domain.records import (
    Decoded,
    Observation,
    Position,
    PositionFix,
    Reading,
    Rejection,
    Stage,
)
from nakhon.processors.codecs.base import TopicContext

REASONS = frozenset(
    {
        "invalid_sensor_id",
        "not_finite",
        "unknown_metric",
        "unknown_unit",
        "out_of_range",
        "time_in_future",
        "time_too_old",
        "duplicate_reading",
        "null_island",
    }
)

_VEHICLE_SPEED = METRICS["vehicle_speed"]


@dataclass(frozen=True, slots=True)
class NormalizePolicy:
    """The knobs of normalization (a slice of :class:`~nakhon.config.ProcessorSettings`)."""

    #: Reject unknown metric names instead of keeping them as ``x_<name>``.
    strict_metrics: bool = False
    #: Values dated further than this after ``received_at`` are rejected.
    future_tolerance_s: float = 300.0
    #: Values dated further than this before ``received_at`` are rejected.
    backfill_horizon_days: float = 30.0
    #: The operator's aliases (``NAKHON_PROCESSOR_METRIC_ALIASES``) by name key
    #: (:func:`~nakhon.domain.catalogue.name_key`), tried before the catalogue.
    aliases: Mapping[str, Metric] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_settings(cls, settings: ProcessorSettings) -> NormalizePolicy:
        return cls(
            strict_metrics=settings.strict_metrics,
            future_tolerance_s=settings.future_tolerance_s,
            backfill_horizon_days=settings.backfill_horizon_days,
            aliases=metric_aliases(settings.metric_aliases),
        )


def metric_aliases(aliases: Mapping[str, str]) -> Mapping[str, Metric]:
    """``{device name: catalogue metric name}`` as a lookup by name key, prepared once.

    Raises ValueError for a target the catalogue does not have (the settings
    refuse it first; this keeps a policy built by hand honest too).
    """
    unknown = sorted({target for target in aliases.values() if target not in METRICS})
    if unknown:
        raise ValueError(f"metric aliases name metrics not in the catalogue: {unknown}")
    return MappingProxyType({name_key(name): METRICS[t] for name, t in aliases.items()})


@dataclass(slots=True)
class Normalized:
    """What one payload yields after normalization.

    ``rejections`` holds the codec's own per-value rejections too, so the caller
    has one list to dead-letter and count. ``unknown_metrics`` lists the
    device's names (one entry per value) kept as ``x_<name>``, for a counter.
    """

    readings: list[Reading] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    unknown_metrics: list[str] = field(default_factory=list)


def clock_offset_s(received_at: datetime, observed_at: datetime) -> float:
    """How far a sensor's clock runs behind the gateway's: ``received_at - observed_at``, s.

    Positive is the normal case (transmission delay, buffering); a large
    negative value means the sensor's clock is ahead. Both must be aware.
    """
    return (received_at - observed_at).total_seconds()


class _Judge:
    """The per-payload state: time window, rejections, duplicates seen."""

    __slots__ = ("ctx", "earliest", "last_id", "latest", "out", "policy", "seen")

    def __init__(self, ctx: TopicContext, policy: NormalizePolicy, out: Normalized) -> None:
        self.ctx = ctx
        self.policy = policy
        self.out = out
        now = _as_utc(ctx.received_at)
        self.latest = now + timedelta(seconds=policy.future_tolerance_s)
        self.earliest = now - timedelta(days=policy.backfill_horizon_days)
        self.seen: set[tuple[str, str, datetime]] = set()
        #: The last sensor id checked and its verdict: a payload's readings share one.
        self.last_id: tuple[str, str | None] = ("", None)

    def reject(self, reason: str, detail: str, sensor_id: str | None, metric: str | None) -> None:
        self.out.rejections.append(
            Rejection(reason, detail, Stage.NORMALIZE, sensor_id=sensor_id, metric=metric)
        )

    def sensor(self, raw_id: str, metric: str | None) -> str | None:
        checked, sensor_id = self.last_id
        if raw_id != checked or sensor_id is None:
            sensor_id = valid_sensor_id(raw_id)
            self.last_id = (raw_id, sensor_id)
        if sensor_id is None:
            self.reject("invalid_sensor_id", f"sensor id {raw_id[:80]!r}", None, metric)
        return sensor_id

    def time(self, time: datetime | None, sensor_id: str, metric: str | None) -> datetime | None:
        if time is None:
            return _as_utc(self.ctx.received_at)
        utc = _as_utc(time)
        if utc > self.latest:
            self.reject(
                "time_in_future",
                f"{utc.isoformat()} is after {self.latest.isoformat()}",
                sensor_id,
                metric,
            )
            return None
        if utc < self.earliest:
            self.reject(
                "time_too_old",
                f"{utc.isoformat()} is before {self.earliest.isoformat()}",
                sensor_id,
                metric,
            )
            return None
        return utc


def normalize(decoded: Decoded, ctx: TopicContext, policy: NormalizePolicy) -> Normalized:
    """Canonical readings and positions from a codec's output, and a rejection per bad value."""
    out = Normalized(rejections=list(decoded.rejections))
    judge = _Judge(ctx, policy, out)
    for observation in decoded.observations:
        reading = _reading(observation, judge)
        if reading is not None:
            out.readings.append(reading)
    for fix in decoded.positions:
        position = _position(fix, judge)
        if position is not None:
            out.positions.append(position)
    return out


def _reading(obs: Observation, judge: _Judge) -> Reading | None:
    aliases = judge.policy.aliases
    metric = aliases.get(name_key(obs.name)) if aliases else None
    if metric is None:
        metric = lookup_metric(obs.name)
    name = metric.name if metric is not None else unknown_metric_name(obs.name)
    sensor_id = judge.sensor(obs.sensor_id, name)
    if sensor_id is None:
        return None
    value = obs.value
    if not math.isfinite(value):
        judge.reject("not_finite", f"{obs.name} = {value!r}", sensor_id, name)
        return None
    if metric is None:
        if judge.policy.strict_metrics:
            judge.reject("unknown_metric", f"metric {obs.name[:80]!r}", sensor_id, name)
            return None
        judge.out.unknown_metrics.append(obs.name)
    else:
        conversion = metric.conversion(obs.unit)
        if conversion is None:
            judge.reject("unknown_unit", f"{obs.name} in {obs.unit!r}", sensor_id, name)
            return None
        value = conversion.to_canonical(value)
        if not metric.is_plausible(value):
            judge.reject(
                "out_of_range",
                f"{value:g} {metric.unit} not in {metric.low:g}–{metric.high:g}",
                sensor_id,
                name,
            )
            return None
    time = judge.time(obs.time, sensor_id, name)
    if time is None:
        return None
    key = (sensor_id, name, time)
    if key in judge.seen:
        judge.reject("duplicate_reading", f"{name} at {time.isoformat()} twice", sensor_id, name)
        return None
    judge.seen.add(key)
    return Reading(time=time, sensor_id=sensor_id, metric=name, value=value, city=judge.ctx.city)


def _position(fix: PositionFix, judge: _Judge) -> Position | None:
    vehicle_id = judge.sensor(fix.vehicle_id, None)
    if vehicle_id is None:
        return None
    numbers = (fix.lat, fix.lon, fix.speed_kmh, fix.heading)
    if not all(n is None or math.isfinite(n) for n in numbers):
        judge.reject("not_finite", f"position {numbers!r}", vehicle_id, None)
        return None
    problem = _position_problem(fix)
    if problem is not None:
        reason, detail = problem
        judge.reject(reason, detail, vehicle_id, None)
        return None
    time = judge.time(fix.time, vehicle_id, None)
    if time is None:
        return None
    return Position(
        time=time,
        vehicle_id=vehicle_id,
        lat=fix.lat,
        lon=fix.lon,
        speed_kmh=fix.speed_kmh,
        heading=fix.heading,
        city=judge.ctx.city,
    )


def _position_problem(fix: PositionFix) -> tuple[str, str] | None:
    if not (-90.0 <= fix.lat <= 90.0 and -180.0 <= fix.lon <= 180.0):
        return "out_of_range", f"lat {fix.lat:g}, lon {fix.lon:g}"
    if fix.lat == 0.0 and fix.lon == 0.0:
        return "null_island", "lat 0, lon 0"
    if fix.speed_kmh is not None and not _VEHICLE_SPEED.is_plausible(fix.speed_kmh):
        return "out_of_range", f"speed {fix.speed_kmh:g} km/h"
    if fix.heading is not None and not 0.0 <= fix.heading <= 360.0:
        return "out_of_range", f"heading {fix.heading:g}°"
    return None


def _as_utc(time: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    if time.tzinfo is None:
        return time.replace(tzinfo=UTC)
    return time.astimezone(UTC)
