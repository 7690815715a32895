"""One end-to-end test per payload format: MQTT -> gateway -> Kafka -> processor -> TimescaleDB.

Every payload is published on its real topic layout into one isolated
namespace (one gateway, one processor for the whole module) and each test
asserts the exact rows that land: time, sensor, canonical metric, value in the
canonical unit, city. Payload shapes follow each format's documentation (the
golden examples in tests/unit/test_codec_*.py); the values are ours.

Times are an hour before the module started: inside the processor's backfill
horizon and its future tolerance, whatever day the tests run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone

import cbor2
import psycopg
import pytest

from tests.integration.conftest import Stack
from tests.integration.pipeline_harness import (
    PipelineNamespace,
    Publisher,
    owner_dsn,
    wait_for,
    wait_until,
)
from tools.sandbox import LORAWAN_CITY

#: Whole seconds, an hour ago: the base time of every payload.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
BANGKOK = timezone(timedelta(hours=7))
#: µg/m³ or mg/m³ -> ppb or ppm at 25 °C, 1 atm (DOMAIN.md): × 24.45 / M.
MOLAR_VOLUME = 24.45

ReadingRow = tuple[datetime, str, str, float, str]


@pytest.fixture(scope="module")
async def ns(stack: Stack) -> AsyncIterator[PipelineNamespace]:
    """One namespace with a running gateway and processor for every test of the module."""
    namespace = PipelineNamespace()
    await namespace.prepare()
    try:
        namespace.gateway().start()
        namespace.processor().start()
        yield namespace
    finally:
        namespace.stop_all()
        with psycopg.connect(owner_dsn()) as conn:
            like = (namespace.name + "%",)
            conn.execute("DELETE FROM readings WHERE sensor_id LIKE %s", like)
            conn.execute("DELETE FROM positions WHERE vehicle_id LIKE %s", like)
            conn.execute("DELETE FROM sensors WHERE sensor_id LIKE %s", like)
            conn.execute("DELETE FROM readings WHERE sensor_id = %s", (dev_eui(namespace),))
            conn.execute("DELETE FROM sensors WHERE sensor_id = %s", (dev_eui(namespace),))


@pytest.fixture(scope="module")
def publisher(ns: PipelineNamespace) -> Iterator[Publisher]:
    pub = Publisher(ns.publisher_credentials)
    yield pub
    pub.close()


def dev_eui(ns: PipelineNamespace) -> str:
    """A LoRaWAN DevEUI (16 hex digits) of this namespace's own."""
    return "70b3d5" + ns.name[1:11]


def iso(t: datetime, tz: timezone = UTC) -> str:
    return t.astimezone(tz).isoformat().replace("+00:00", "Z")


def stored(sensor_id: str, expect: int) -> list[ReadingRow]:
    """The readings rows of a sensor, once ``expect`` of them landed (by metric, then time)."""

    def count() -> int:
        with psycopg.connect(owner_dsn()) as conn:
            row = conn.execute(
                "SELECT count(*) FROM readings WHERE sensor_id = %s", (sensor_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    wait_until(lambda: count() >= expect, 30, f"{expect} rows of {sensor_id}")
    with psycopg.connect(owner_dsn()) as conn:
        return conn.execute(
            "SELECT time, sensor_id, metric, value, city FROM readings WHERE sensor_id = %s"
            " ORDER BY metric, time",
            (sensor_id,),
        ).fetchall()


def rows(
    sensor_id: str, city: str, *readings: tuple[datetime, str, float]
) -> list[tuple[object, ...]]:
    """Expected rows, ordered like :func:`stored`; values compared to 1e-9 relative."""
    return [
        (t, sensor_id, metric, pytest.approx(value, rel=1e-9), city)
        for t, metric, value in sorted(readings, key=lambda r: (r[1], r[0]))
    ]


async def test_senml_json(ns: PipelineNamespace, publisher: Publisher) -> None:
    sensor = f"{ns.name}-senml"
    t = T0.timestamp()
    pack = [
        {"bn": f"urn:dev:ow:{sensor}:", "bt": t, "bu": "Cel", "bver": 10,
         "n": "temperature", "v": 31.5},
        {"n": "humidity", "u": "%RH", "v": 68, "t": 30},
        {"n": "pm2.5", "u": "ug/m3", "v": 37.5, "t": 60},
        {"n": "o3", "u": "ug/m3", "v": 96.0, "t": 60},
        {"n": "pressure", "u": "Pa", "v": 100_950, "t": 60.5},
    ]  # fmt: skip
    publisher.publish_all([(ns.topic("Khon_Kaen", sensor, "senml"), json.dumps(pack).encode())])
    assert stored(sensor, 5) == rows(
        sensor,
        "khon_kaen",
        (T0, "temperature", 31.5),
        (T0 + timedelta(seconds=30), "humidity", 68.0),
        (T0 + timedelta(seconds=60), "pm2_5", 37.5),
        (T0 + timedelta(seconds=60), "o3", 96.0 * MOLAR_VOLUME / 48.00),
        (T0 + timedelta(seconds=60.5), "pressure", 1009.5),
    )


async def test_senml_cbor_with_integer_labels(ns: PipelineNamespace, publisher: Publisher) -> None:
    sensor = f"{ns.name}-cbor"
    # RFC 8428 §6, Table 4: bn -2, bt -3, bu -4, n 0, u 1, v 2, s 5, t 6.
    pack = [
        {-2: "aq/", -3: T0.timestamp(), -4: "ug/m3", 0: "pm10", 2: 55},
        {0: "pm25", 2: 21.25, 6: 10},
        {0: "temperature", 1: "K", 2: 303.15, 6: 10},
        {0: "rainfall", 1: "mm", 5: 2.5, 6: 20},
    ]
    publisher.publish_all([(ns.topic("lampang", sensor, "senml-cbor"), cbor2.dumps(pack))])
    assert stored(sensor, 4) == rows(
        sensor,
        "lampang",
        (T0, "pm10", 55.0),
        (T0 + timedelta(seconds=10), "pm2_5", 21.25),
        (T0 + timedelta(seconds=10), "temperature", 30.0),
        (T0 + timedelta(seconds=20), "rainfall", 2.5),
    )


async def test_simple_json_both_shapes(ns: PipelineNamespace, publisher: Publisher) -> None:
    sensor = f"{ns.name}-json"
    topic = ns.topic("rayong", sensor, "json")
    flat = {"ts": iso(T0, BANGKOK), "pm25": 41.2, "temperature": {"value": 88.0, "unit": "°F"}}
    t1 = T0 + timedelta(minutes=1, milliseconds=250)
    nested = {
        "ts": int(t1.timestamp() * 1000),  # epoch milliseconds
        "readings": {"co": 1500, "noise": 62.5},
        "units": {"co": "ppb"},
    }
    publisher.publish_all(
        [(topic, json.dumps(flat).encode()), (topic, json.dumps(nested).encode())]
    )
    assert stored(sensor, 4) == rows(
        sensor,
        "rayong",
        (T0, "pm2_5", 41.2),
        (T0, "temperature", (88.0 - 32) * 5 / 9),
        (t1, "co", 1.5),
        (t1, "noise_laeq", 62.5),
    )


async def test_ngsi_ld_normalized_air_quality(ns: PipelineNamespace, publisher: Publisher) -> None:
    sensor = f"{ns.name}-ngsi-aq"
    observed_later = T0 + timedelta(minutes=5)
    entity = {
        "id": f"urn:ngsi-ld:AirQualityObserved:{sensor}",
        "type": "AirQualityObserved",
        "dateObserved": {"type": "Property",
                         "value": {"@type": "DateTime", "@value": iso(T0)}},
        "CO": {"type": "Property", "value": 1.145, "unitCode": "GP"},
        "NO2": {"type": "Property", "value": 45.0, "unitCode": "GQ"},
        "pm25": {"type": "Property", "value": 12, "unitCode": "GQ"},
        "relativeHumidity": {"type": "Property", "value": 0.65},
        "temperature": {"type": "Property", "value": 29.5, "unitCode": "CEL",
                        "observedAt": iso(observed_later)},
        "airQualityIndex": {"type": "Property", "value": 35},
        "location": {"type": "GeoProperty",
                     "value": {"type": "Point", "coordinates": [100.502, 13.756]}},
        "@context": ["https://smartdatamodels.org/context.jsonld"],
    }  # fmt: skip
    publisher.publish_all([(ns.topic("bangkok", sensor, "ngsi"), json.dumps(entity).encode())])
    assert stored(sensor, 5) == rows(
        sensor,
        "bangkok",
        (T0, "co", 1.145 * MOLAR_VOLUME / 28.01),  # GP = mg/m³ -> ppm
        (T0, "no2", 45.0 * MOLAR_VOLUME / 46.01),  # GQ = µg/m³ -> ppb
        (T0, "pm2_5", 12.0),
        (T0, "humidity", 65.0),  # a 0–1 fraction in Smart Data Models
        (observed_later, "temperature", 29.5),
    )


async def test_ngsi_key_values_traffic_flow(ns: PipelineNamespace, publisher: Publisher) -> None:
    sensor = f"{ns.name}-ngsi-tf"
    start, end = T0, T0 + timedelta(minutes=15)
    entity = {
        "id": f"urn:ngsi-ld:TrafficFlowObserved:{sensor}",
        "type": "TrafficFlowObserved",
        "dateObserved": f"{iso(start)}/{iso(end)}",
        "dateObservedFrom": iso(start),
        "dateObservedTo": iso(end),
        "laneId": 1,
        "laneDirection": "forward",
        "intensity": 197,
        "occupancy": 0.76,
        "averageVehicleSpeed": 52.6,
        "congested": False,
    }
    publisher.publish_all([(ns.topic("chonburi", sensor, "ngsi"), json.dumps(entity).encode())])
    assert stored(sensor, 3) == rows(
        sensor,
        "chonburi",
        (end, "vehicle_count", 197.0),
        (end, "occupancy", 76.0),
        (end, "vehicle_speed", 52.6),
    )


async def test_the_things_stack_v3_uplink(ns: PipelineNamespace, publisher: Publisher) -> None:
    device_id = f"{ns.name}-tts"
    uplink = {
        "end_device_ids": {
            "device_id": device_id,
            "application_ids": {"application_id": "aq-app"},
            "dev_eui": "70B3D57ED0000001",
            "dev_addr": "260B1234",
        },
        "correlation_ids": ["as:up:01H0000000000000000000000"],
        "received_at": iso(T0 + timedelta(seconds=2)),
        "uplink_message": {
            "f_port": 2,
            "f_cnt": 118,
            "frm_payload": "AWcBEwJoiA==",
            "decoded_payload": {"temperature_1": 27.5, "relative_humidity_2": 68, "pm25": 12},
            "rx_metadata": [
                {"gateway_ids": {"gateway_id": "gw-bkk-1"}, "rssi": -112, "snr": -3.5},
                {"gateway_ids": {"gateway_id": "gw-bkk-2"}, "rssi": -97, "snr": 4.25},
            ],
            "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 9}},
                         "frequency": "923200000"},
            "received_at": iso(T0),
        },
    }  # fmt: skip
    topic = f"{ns.root}-ttn/v3/aq-app@ttn/devices/{device_id}/up"
    publisher.publish_all([(topic, json.dumps(uplink).encode())])
    assert stored(device_id, 5) == rows(
        device_id,
        LORAWAN_CITY,
        (T0, "temperature", 27.5),
        (T0, "humidity", 68.0),
        (T0, "pm2_5", 12.0),
        (T0, "link_rssi", -97.0),  # the best gateway's
        (T0, "link_snr", 4.25),
    )


async def test_chirpstack_v4_uplink(ns: PipelineNamespace, publisher: Publisher) -> None:
    eui = dev_eui(ns)
    event = {
        "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
        "time": iso(T0, BANGKOK),
        "deviceInfo": {
            "tenantName": "Nakhon",
            "applicationName": "traffic",
            "deviceName": "Counter Sukhumvit 21",
            "devEui": eui.upper(),
        },
        "devAddr": "00189440",
        "fCnt": 10,
        "fPort": 1,
        "data": "AQID",
        "object": {"temperatureSensor": {"1": 31.0}, "vehicle_count": 42,
                   "averageVehicleSpeed": {"value": 12.5, "unit": "m/s"}},
        "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -60, "snr": 10.5}],
    }  # fmt: skip
    topic = f"{ns.root}-cs/application/42/device/{eui}/event/up"
    publisher.publish_all([(topic, json.dumps(event).encode())])
    assert stored(eui, 5) == rows(
        eui,
        LORAWAN_CITY,
        (T0, "temperature", 31.0),
        (T0, "vehicle_count", 42.0),
        (T0, "vehicle_speed", 45.0),  # 12.5 m/s
        (T0, "link_rssi", -60.0),
        (T0, "link_snr", 10.5),
    )


async def test_vehicle_positions(ns: PipelineNamespace, publisher: Publisher) -> None:
    vehicle = f"{ns.name}-bus-8"
    t1 = T0 + timedelta(seconds=5, milliseconds=500)
    fixes = [
        {"ts": iso(T0), "lat": 13.7563, "lon": 100.5018, "speed": 42.5, "heading": 270},
        {"ts": iso(t1), "lat": 13.7564, "lng": 100.5011},  # no speed, no heading
    ]
    publisher.publish_all([(ns.topic("Bangkok", vehicle, "position"), json.dumps(fixes).encode())])

    def positions() -> list[tuple[object, ...]]:
        with psycopg.connect(owner_dsn()) as conn:
            return conn.execute(
                "SELECT time, vehicle_id, lat, lon, speed_kmh, heading, city FROM positions"
                " WHERE vehicle_id = %s ORDER BY time",
                (vehicle,),
            ).fetchall()

    wait_until(lambda: len(positions()) >= 2, 30, "two positions")
    assert positions() == [
        (T0, vehicle, 13.7563, 100.5018, 42.5, 270.0, "bangkok"),
        (t1, vehicle, 13.7564, 100.5011, None, None, "bangkok"),
    ]
    with psycopg.connect(owner_dsn()) as conn:
        registered = conn.execute(
            "SELECT city, kind, first_seen, last_seen FROM sensors WHERE sensor_id = %s",
            (vehicle,),
        ).fetchone()
    assert registered == ("bangkok", "vehicle", T0, t1)


async def test_nothing_above_was_dead_lettered(ns: PipelineNamespace) -> None:
    """Every value of every payload above was stored: no partial rejection hid anywhere."""
    # Each test above waited for its rows, so its payloads are in nakhon.raw.
    # Once the group has committed all of it, any dead letter of theirs is in
    # Kafka too (a batch's are published before its commit): read them all.
    await wait_for(ns.caught_up, 30, "the processor's commits up to the end of raw")
    letters = await ns.all_dead_letters()
    assert [(x["mqtt_topic"], x["reason"], x["detail"]) for x in letters] == []
