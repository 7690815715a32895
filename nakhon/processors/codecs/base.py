"""The small interface every codec implements (one module per format).

A codec is pure: bytes and the topic's context in, a :class:`Decoded` out. It
never touches the network or the database, and it never raises anything but
:class:`DecodeError`, which means "this payload as a whole is malformed". A bad
value inside an otherwise good payload is not an error of the codec: it passes
the value on, and the shared normalization step (``processors/normalize.py``)
rejects that one value with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from nakhon.domain.records import Decoded


@dataclass(frozen=True, slots=True)
class TopicContext:
    """What the MQTT topic and the gateway say about a payload."""

    mqtt_topic: str
    city: str
    #: The sensor the topic names, or None where the payload names it (LoRaWAN).
    sensor_id: str | None
    received_at: datetime
    #: False where the route names no city (LoRaWAN): the sensor registry's city wins.
    city_from_topic: bool = True


class DecodeError(Exception):
    """The payload as a whole cannot be understood; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Codec(Protocol):
    """Decodes one payload format."""

    #: The name routes refer to (``senml``, ``json`` ...).
    name: str

    def decode(self, payload: bytes, ctx: TopicContext) -> Decoded:
        """Return what the payload holds, or raise :class:`DecodeError`."""
        ...
