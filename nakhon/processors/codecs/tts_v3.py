"""``tts-v3``: The Things Stack v3 uplink messages (``v3/<app>@<tenant>/devices/<id>/up``).

Field paths (The Things Stack "Data Formats", uplink message):
``end_device_ids.device_id``, ``end_device_ids.dev_eui``, ``received_at``,
``uplink_message.f_port``, ``uplink_message.decoded_payload`` (the output of
the application's payload formatter), ``uplink_message.received_at``,
``uplink_message.rx_metadata[]`` (``gateway_ids``, ``rssi``, ``snr``, ``time``).

- Sensor: the topic's, else ``end_device_ids.device_id`` (TTS device ids are
  already lower-case ``[a-z0-9-]``).
- Time: ``uplink_message.received_at`` (when the network server got the
  frame), else the top-level ``received_at``.
- Readings: ``decoded_payload`` flattened (vendor keys, Cayenne LPP
  ``temperature_1``, nested ``{"temperatureSensor": {"1": 27.5}}``) and named
  through the metric catalogue by normalization.
- Radio: the best ``rssi`` and ``snr`` over ``rx_metadata`` become
  ``link_rssi`` (dBm) and ``link_snr`` (dB) readings, for coverage maps.
- An uplink without ``f_port`` (or port 0) carries only MAC commands: it
  yields nothing. An application uplink without ``decoded_payload`` (no
  payload formatter yet) is a ``DecodeError("no_decoded_payload")``, so it is
  dead-lettered with its bytes and can be replayed once a formatter exists.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from nakhon.domain.records import Decoded
from nakhon.processors.codecs.base import TopicContext
from nakhon.processors.codecs.lorawan import parse_envelope, uplink_readings, uplink_time


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _DeviceIds(_Model):
    device_id: str
    dev_eui: str | None = None


class _RxMetadata(_Model):
    rssi: float | None = None
    snr: float | None = None


class _UplinkMessage(_Model):
    f_port: int | None = None
    decoded_payload: dict[str, Any] | None = None
    rx_metadata: list[_RxMetadata] = []
    received_at: str | None = None


class _Uplink(_Model):
    end_device_ids: _DeviceIds
    received_at: str | None = None
    uplink_message: _UplinkMessage


class TtsV3Codec:
    """``tts-v3``: a The Things Stack v3 uplink message."""

    name = "tts-v3"

    def decode(self, payload: bytes, ctx: TopicContext) -> Decoded:
        return decode_tts_v3(payload, ctx)


def decode_tts_v3(payload: bytes, ctx: TopicContext) -> Decoded:
    uplink = parse_envelope(_Uplink, payload)
    message = uplink.uplink_message
    return uplink_readings(
        f_port=message.f_port,
        decoded_object=message.decoded_payload,
        no_object_detail="the application has no payload formatter",
        sensor_id=ctx.sensor_id or uplink.end_device_ids.device_id,
        time=uplink_time(message.received_at or uplink.received_at),
        rssi=[rx.rssi for rx in message.rx_metadata],
        snr=[rx.snr for rx in message.rx_metadata],
    )
