"""The Things Stack v3 and ChirpStack v4 uplinks, in the shapes of their docs (our values)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from nakhon.processors.codecs import get_codec
from nakhon.processors.codecs.base import DecodeError, TopicContext
from nakhon.processors.normalize import NormalizePolicy, normalize

NOW = datetime(2024, 3, 1, 1, 0, 5, tzinfo=UTC)
TTS_CTX = TopicContext("v3/aq-app@ttn/devices/eui-70b3d57ed0000001/up", "unknown", None, NOW)
CS_CTX = TopicContext("application/42/device/70b3d57ed0000001/event/up", "unknown", None, NOW)
T0 = datetime(2024, 3, 1, 1, 0, tzinfo=UTC)

TTS_UPLINK = {
    "end_device_ids": {
        "device_id": "eui-70b3d57ed0000001",
        "application_ids": {"application_id": "aq-app"},
        "dev_eui": "70B3D57ED0000001",
        "dev_addr": "260B1234",
    },
    "correlation_ids": ["as:up:01H..."],
    "received_at": "2024-03-01T01:00:00.912345678Z",
    "uplink_message": {
        "f_port": 2,
        "f_cnt": 118,
        "frm_payload": "AWcBEwJoiA==",
        "decoded_payload": {"temperature_1": 27.5, "relative_humidity_2": 68, "pm25": 12,
                            "alarm": False},
        "rx_metadata": [
            {"gateway_ids": {"gateway_id": "gw-bkk-1"}, "rssi": -112, "snr": -3.5},
            {"gateway_ids": {"gateway_id": "gw-bkk-2"}, "rssi": -97, "snr": 4.25},
        ],
        "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 9}},
                     "frequency": "923200000"},
        "received_at": "2024-03-01T01:00:00.000000001Z",
    },
}  # fmt: skip

CS_UPLINK = {
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    "time": "2024-03-01T01:00:00+00:00",
    "deviceInfo": {
        "tenantName": "Nakhon",
        "applicationName": "traffic",
        "deviceName": "Counter Sukhumvit 21",
        "devEui": "70B3D57ED0000001",
    },
    "devAddr": "00189440",
    "fCnt": 10,
    "fPort": 1,
    "data": "AQID",
    "object": {"temperatureSensor": {"1": 31.0}, "vehicle_count": 42,
               "speed": {"value": 12.5, "unit": "m/s"}},
    "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -60, "snr": 10.5}],
}  # fmt: skip


def test_tts_uplink() -> None:
    decoded = get_codec("tts-v3").decode(orjson.dumps(TTS_UPLINK), TTS_CTX)
    got = [(o.sensor_id, o.name, o.value, o.time) for o in decoded.observations]
    assert got == [
        ("eui-70b3d57ed0000001", "temperature_1", 27.5, T0),
        ("eui-70b3d57ed0000001", "relative_humidity_2", 68.0, T0),
        ("eui-70b3d57ed0000001", "pm25", 12.0, T0),
        ("eui-70b3d57ed0000001", "link_rssi", -97.0, T0),
        ("eui-70b3d57ed0000001", "link_snr", 4.25, T0),
    ]
    assert [r.reason for r in decoded.rejections] == ["non_numeric_value"]
    out = normalize(decoded, TTS_CTX, NormalizePolicy(strict_metrics=True))
    assert [r.metric for r in out.readings] == [
        "temperature", "humidity", "pm2_5", "link_rssi", "link_snr",
    ]  # fmt: skip


def test_chirpstack_uplink() -> None:
    decoded = get_codec("chirpstack-v4").decode(orjson.dumps(CS_UPLINK), CS_CTX)
    out = normalize(decoded, CS_CTX, NormalizePolicy(strict_metrics=True))
    assert [(r.sensor_id, r.metric, r.value, r.time) for r in out.readings] == [
        ("70b3d57ed0000001", "temperature", 31.0, T0),
        ("70b3d57ed0000001", "vehicle_count", 42.0, T0),
        ("70b3d57ed0000001", "link_rssi", -60.0, T0),
        ("70b3d57ed0000001", "link_snr", 10.5, T0),
    ]
    assert [r.reason for r in out.rejections] == ["unknown_metric"]  # "speed" is ambiguous


def test_mac_only_uplinks_yield_nothing() -> None:
    tts = {**TTS_UPLINK, "uplink_message": {"f_cnt": 3, "rx_metadata": []}}
    assert get_codec("tts-v3").decode(orjson.dumps(tts), TTS_CTX).observations == []
    cs = {k: v for k, v in CS_UPLINK.items() if k != "fPort"}
    assert get_codec("chirpstack-v4").decode(orjson.dumps(cs), CS_CTX).observations == []


@pytest.mark.parametrize(
    ("codec", "payload", "reason"),
    [
        ("tts-v3", b"{}", "malformed_uplink"),
        ("tts-v3", b"\x00", "malformed_uplink"),
        ("tts-v3", orjson.dumps({**TTS_UPLINK, "uplink_message": {"f_port": 1}}),
         "no_decoded_payload"),
        ("tts-v3", orjson.dumps({**TTS_UPLINK, "received_at": "x",
                                 "uplink_message": {"f_port": 1, "decoded_payload": {}}}),
         "invalid_time"),
        ("chirpstack-v4", b"[]", "malformed_uplink"),
        ("chirpstack-v4", orjson.dumps({**CS_UPLINK, "object": None}), "no_decoded_payload"),
        ("chirpstack-v4", orjson.dumps({**CS_UPLINK, "time": 5}), "malformed_uplink"),
    ],
)  # fmt: skip
def test_uplink_errors(codec: str, payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        get_codec(codec).decode(payload, TTS_CTX)
    assert caught.value.reason == reason
