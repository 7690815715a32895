"""What every LoRaWAN network server's uplink has in common, decoded once.

The Things Stack (:mod:`.tts_v3`) and ChirpStack (:mod:`.chirpstack_v4`) name
their fields differently but mean the same: a port (0 or none: MAC commands
only, nothing to store), the object the device profile's codec decoded, a time,
and each receiving gateway's ``rssi`` and ``snr``. Each codec parses its own
envelope with pydantic and hands those parts to :func:`uplink_readings`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from nakhon.domain.records import Decoded
from nakhon.processors.codecs.base import DecodeError
from nakhon.processors.codecs.fields import (
    InvalidTime,
    add_link_quality,
    add_readings,
    flatten_readings,
    parse_time,
)

Envelope = TypeVar("Envelope", bound=BaseModel)


def parse_envelope(model: type[Envelope], payload: bytes) -> Envelope:
    """The network server's JSON as ``model``; ``DecodeError("malformed_uplink")`` if not."""
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise DecodeError("malformed_uplink", validation_summary(exc)) from exc


def uplink_time(text: str | None) -> datetime | None:
    """The uplink's time, None when absent; ``DecodeError("invalid_time")`` when unreadable."""
    if text is None:
        return None
    try:
        return parse_time(text)
    except InvalidTime as exc:
        raise DecodeError("invalid_time", str(exc)) from exc


def uplink_readings(
    *,
    f_port: int | None,
    decoded_object: dict[str, Any] | None,
    no_object_detail: str,
    sensor_id: str,
    time: datetime | None,
    rssi: Iterable[float | None],
    snr: Iterable[float | None],
) -> Decoded:
    """The readings of one uplink: its decoded object flattened, plus the best radio link.

    No port (or port 0) yields nothing. An application uplink without a decoded
    object is ``DecodeError("no_decoded_payload", no_object_detail)``, so it is
    dead-lettered with its bytes and can be replayed once a codec exists.
    ``rssi`` and ``snr`` are each receiving gateway's.
    """
    if not f_port:
        return Decoded()
    if decoded_object is None:
        raise DecodeError("no_decoded_payload", no_object_detail)
    decoded = Decoded()
    add_readings(decoded, flatten_readings(decoded_object), sensor_id, time)
    add_link_quality(decoded, sensor_id, time, list(rssi), list(snr))
    return decoded


def validation_summary(exc: ValidationError) -> str:
    """The first three of pydantic's errors, as ``field.path: message``, at most 300 characters."""
    errors = exc.errors(include_url=False, include_input=False)
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:3])[:300]
