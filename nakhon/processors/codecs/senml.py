"""SenML JSON (RFC 8428), and the record resolution SenML CBOR shares.

Resolution follows RFC 8428 §4.6 ("Resolved Records"):
- name = ``bn`` + ``n`` (§4.5.1); time = ``bt`` + ``t`` (§4.5.3), and a resolved
  time below 2**28 is relative to "now", which here is ``ctx.received_at``
  (the same payload replayed later resolves to the same times);
- value = ``bv`` + ``v`` (§4.5.2); unit = ``u``, else ``bu``;
- base fields (``bn``, ``bt``, ``bu``, ``bv``, ``bs``) carry forward to every
  later record of the pack until a record sets them again (§4.1);
- ``bver`` above 10, the version this codec implements (§4.4), rejects the pack;
  so does a label ending in ``_`` (a "must-understand" extension, §4.4, that
  this codec cannot understand).

Nakhon's rules on top of the RFC:
- On a ``city/<city>/<sensor_id>/senml`` topic the sensor is the topic's and the
  metric is the record's name with the ``bn`` prefix removed (that is ``n``).
  Where the topic names no sensor, the sensor is the last ``:``/``/`` segment
  of ``bn`` (``urn:dev:ow:10e2073a01080063:`` -> ``10e2073a01080063``).
- A record whose name is only the base name (no ``n``) gets the metric its
  unit implies (``Cel`` -> temperature, ``%RH`` -> humidity, ``Pa`` -> pressure);
  with no such unit it is kept under the name ``value``.
- A record with ``s`` and no ``v`` yields ``bs`` + ``s`` as its value.
- ``vs``/``vb``/``vd`` (string, boolean, data) are not measurements Nakhon
  stores: each such record is rejected with ``non_numeric_value``; the numeric
  records of the same pack are kept.
- ``ut`` (update time) is accepted and ignored.
- Record-level faults are per-record rejections (``malformed_record``,
  ``missing_value``, ``invalid_time``, ``missing_sensor_id``); faults in base
  fields, which would taint every later record, reject the pack.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta

import orjson

from nakhon.domain.records import Decoded, Observation, Rejection, Stage
from nakhon.processors.codecs.base import DecodeError, TopicContext
from nakhon.processors.codecs.fields import InvalidTime, as_number, from_epoch

#: RFC 8428 §4.5.3: resolved times below 2**28 are relative to now.
RELATIVE_TIME_LIMIT = 2**28
#: RFC 8428 §4.4: the version this codec implements.
SENML_VERSION = 10

_BASE_LABELS = frozenset({"bn", "bt", "bu", "bv", "bs", "bver"})
_NON_NUMERIC = ("vs", "vb", "vd")
#: Metric implied by a unit when a record names only its device (RFC 8428 §5.1.1 shape).
_UNIT_METRIC: Mapping[str, str] = {
    "Cel": "temperature",
    "K": "temperature",
    "%RH": "humidity",
    "Pa": "pressure",
    "hPa": "pressure",
}


class SenmlJsonCodec:
    """``senml``: a SenML pack as a JSON array (RFC 8428 §5)."""

    name = "senml"

    def decode(self, payload: bytes, ctx: TopicContext) -> Decoded:
        return decode_senml_json(payload, ctx)


def decode_senml_json(payload: bytes, ctx: TopicContext) -> Decoded:
    try:
        pack = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed_json", str(exc)[:200]) from exc
    return resolve_pack(pack, ctx)


def resolve_pack(pack: object, ctx: TopicContext) -> Decoded:
    """Observations from a SenML pack whose records have text labels (JSON, or CBOR mapped)."""
    if not isinstance(pack, list):
        raise DecodeError("malformed_senml", "a SenML pack is an array of records")
    state = _Base(ctx)
    decoded = Decoded()
    for index, record in enumerate(pack):
        if not isinstance(record, dict):
            raise DecodeError("malformed_senml", f"record {index} is not a map")
        state.update(record, index)
        state.resolve(record, decoded)
    return decoded


class _Base:
    """The base fields in force, carried from record to record (RFC 8428 §4.1)."""

    __slots__ = ("bn", "bs", "bt", "bu", "bv", "ctx")

    def __init__(self, ctx: TopicContext) -> None:
        self.ctx = ctx
        self.bn = ""
        self.bt = 0.0
        self.bu: str | None = None
        self.bv = 0.0
        self.bs = 0.0

    def update(self, record: dict[object, object], index: int) -> None:
        for label in record:
            if isinstance(label, str) and label.endswith("_"):
                raise DecodeError("unsupported_senml_field", f"record {index}: {label[:40]!r}")
        if not _BASE_LABELS.intersection(record):
            return
        if "bver" in record:
            version = record["bver"]
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise DecodeError("malformed_senml", f"record {index}: bver {version!r}")
            if version > SENML_VERSION:
                raise DecodeError("unsupported_senml_version", f"bver {version}")
        if "bn" in record:
            self.bn = _text(record["bn"], "bn", index)
        if "bu" in record:
            self.bu = _text(record["bu"], "bu", index)
        for label in ("bt", "bv", "bs"):
            if label in record:
                number = as_number(record[label])
                if number is None or not math.isfinite(number):
                    raise DecodeError(
                        "malformed_senml", f"record {index}: {label} not a finite number"
                    )
                setattr(self, label, number)

    def resolve(self, record: dict[object, object], decoded: Decoded) -> None:
        n = record.get("n", "")
        unit = record.get("u", self.bu)
        if not isinstance(n, str) or not (unit is None or isinstance(unit, str)):
            decoded.rejections.append(_rejection("malformed_record", "n or u is not text"))
            return
        sensor_id = self.ctx.sensor_id or _sensor_from_base_name(self.bn)
        metric = n or _UNIT_METRIC.get(unit or "", "value")
        if not sensor_id:
            decoded.rejections.append(_rejection("missing_sensor_id", "no topic sensor, no bn"))
            return
        value = self._value(record, sensor_id, metric, decoded)
        if value is None:
            return
        t = as_number(record.get("t", 0.0))
        if t is None:
            decoded.rejections.append(
                _rejection("malformed_record", "t is not a number", sensor_id, metric)
            )
            return
        try:
            time = self._time(self.bt + t)
        except InvalidTime as exc:
            decoded.rejections.append(_rejection("invalid_time", str(exc), sensor_id, metric))
            return
        decoded.observations.append(Observation(sensor_id, metric, value, unit, time))

    def _value(
        self, record: dict[object, object], sensor_id: str, metric: str, decoded: Decoded
    ) -> float | None:
        for label, base in (("v", self.bv), ("s", self.bs)):
            if label in record:
                number = as_number(record[label])
                if number is None:
                    decoded.rejections.append(
                        _rejection(
                            "malformed_record", f"{label} is not a number", sensor_id, metric
                        )
                    )
                    return None
                return base + number
        if any(label in record for label in _NON_NUMERIC):
            decoded.rejections.append(
                _rejection("non_numeric_value", "vs/vb/vd values are not stored", sensor_id, metric)
            )
        elif "n" in record or not _BASE_LABELS.intersection(record):
            # A record of base fields only sets the base for the records after it.
            decoded.rejections.append(
                _rejection("missing_value", "no v, s, vs, vb or vd", sensor_id, metric)
            )
        return None

    def _time(self, resolved: float) -> datetime:
        if not math.isfinite(resolved):
            raise InvalidTime(f"not finite: {resolved!r}")
        if resolved < RELATIVE_TIME_LIMIT:
            try:
                return self.ctx.received_at + timedelta(seconds=resolved)
            except OverflowError as exc:
                raise InvalidTime(f"out of range: {resolved!r}") from exc
        return from_epoch(resolved)


def _sensor_from_base_name(bn: str) -> str:
    """``urn:dev:ow:10e2073a01080063:`` -> ``10e2073a01080063``; ``bkk/aq-7/`` -> ``aq-7``."""
    trimmed = bn.rstrip(":/")
    return trimmed.replace("/", ":").rsplit(":", 1)[-1]


def _text(value: object, label: str, index: int) -> str:
    if not isinstance(value, str):
        raise DecodeError("malformed_senml", f"record {index}: {label} is not text")
    return value


def _rejection(
    reason: str, detail: str, sensor_id: str | None = None, metric: str | None = None
) -> Rejection:
    return Rejection(reason, detail, Stage.DECODE, sensor_id=sensor_id, metric=metric)
