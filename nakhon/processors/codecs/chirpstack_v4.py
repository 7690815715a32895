"""``chirpstack-v4``: ChirpStack v4 uplink events (``application/<app>/device/<eui>/event/up``).

Field paths (ChirpStack v4 integration events, ``up``, JSON encoding):
``deviceInfo.devEui``, ``deviceInfo.deviceName``, ``deviceInfo.applicationName``,
``time``, ``fPort``, ``object`` (the codec's decoded payload), ``rxInfo[]``
(``gatewayId``, ``rssi``, ``snr``).

- Sensor: the topic's, else ``deviceInfo.devEui`` lower-cased. ``deviceName``
  is free text chosen by an operator (spaces, capitals) and is not an id.
- Time: ``time`` (gateway time of the uplink; absent when no gateway had a
  clock), else "when received".
- Readings and radio as in :mod:`.tts_v3` (both through :mod:`.lorawan`):
  ``object`` flattened, best ``rssi`` and ``snr`` over ``rxInfo`` as
  ``link_rssi``/``link_snr``; no ``fPort`` (or 0) yields nothing; no
  ``object`` is ``DecodeError("no_decoded_payload")``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nakhon.domain.records import Decoded
from nakhon.processors.codecs.base import TopicContext
from nakhon.processors.codecs.lorawan import parse_envelope, uplink_readings, uplink_time


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class _DeviceInfo(_Model):
    dev_eui: str = Field(alias="devEui")
    device_name: str | None = Field(default=None, alias="deviceName")


class _RxInfo(_Model):
    rssi: float | None = None
    snr: float | None = None


class _UplinkEvent(_Model):
    device_info: _DeviceInfo = Field(alias="deviceInfo")
    time: str | None = None
    f_port: int | None = Field(default=None, alias="fPort")
    object: dict[str, Any] | None = None
    rx_info: list[_RxInfo] = Field(default=[], alias="rxInfo")


class ChirpstackV4Codec:
    """``chirpstack-v4``: a ChirpStack v4 uplink event."""

    name = "chirpstack-v4"

    def decode(self, payload: bytes, ctx: TopicContext) -> Decoded:
        return decode_chirpstack_v4(payload, ctx)


def decode_chirpstack_v4(payload: bytes, ctx: TopicContext) -> Decoded:
    event = parse_envelope(_UplinkEvent, payload)
    return uplink_readings(
        f_port=event.f_port,
        decoded_object=event.object,
        no_object_detail="the device profile has no codec",
        sensor_id=ctx.sensor_id or event.device_info.dev_eui.lower(),
        time=uplink_time(event.time),
        rssi=[rx.rssi for rx in event.rx_info],
        snr=[rx.snr for rx in event.rx_info],
    )
