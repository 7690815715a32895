"""The API through a real uvicorn server and the real database.

Every test seeds its own city and sensors under a unique prefix, so tests
never see each other's data (or the simulator's).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from pydantic import SecretStr

from nakhon.api.app import create_app
from nakhon.api.key_store import create_api_key
from nakhon.api.keys import SCOPES
from nakhon.api.queries.sensors import _CITIES
from nakhon.config import ApiSettings, DbSettings, Settings
from nakhon.domain.aqi import Concentrations, thai_aqi, us_aqi
from nakhon.storage.migrate import migrate, timescaledb_edition
from nakhon.storage.rollups import ApacheRollupRefresher
from tests.integration.conftest import Stack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """Run the app on uvicorn in a thread; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def settings_for(stack: Stack, **api: Any) -> Settings:
    # Tests send many requests quickly: a rate limit only where a test sets one.
    api = {"rate_per_s": 10_000.0, "rate_burst": 10_000, **api}
    db = DbSettings(dsn=SecretStr(stack.dsn), api_dsn=SecretStr(stack.reader_dsn))
    return Settings(db=db, api=ApiSettings(**api))


def provision_key(dsn: str, name: str = "tests", **grant: Any) -> str:
    """A new key through the library function ``nakhon api-keys create`` uses."""
    if not grant.get("cities"):
        grant.setdefault("all_cities", True)
    grant.setdefault("scopes", SCOPES)
    with psycopg.connect(dsn) as conn:
        key, _ = create_api_key(conn, name, **grant)
    return key.key


@pytest.fixture(scope="module")
def base_url(stack: Stack) -> Iterator[str]:
    migrate(stack.dsn)
    with serve(settings_for(stack, max_points=2000)) as url:
        yield url


@pytest.fixture(scope="module")
def all_cities_key(stack: Stack) -> str:
    migrate(stack.dsn)
    return provision_key(stack.dsn, "tests: test_api")


@pytest.fixture
def client(base_url: str, all_cities_key: str) -> Iterator[httpx.Client]:
    headers = {"X-API-Key": all_cities_key}
    with httpx.Client(base_url=base_url, timeout=10, headers=headers) as c:
        yield c


@pytest.fixture
def city() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


def seed_sensors(dsn: str, city: str, sensors: list[tuple[str, str, float, float]]) -> None:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sensors (sensor_id, city, kind, name, lat, lon, source)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'registry')",
            [(sid, city, kind, f"name {sid}", lat, lon) for sid, kind, lat, lon in sensors],
        )


def seed_readings(dsn: str, rows: list[tuple[datetime, str, str, float, str]]) -> None:
    """Readings rows, and their sensors' ``last_seen`` moved forward as the writer does."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (time, sensor_id, metric, value, city)"
            " VALUES (%s, %s, %s, %s, %s)",
            rows,
        )
        cur.executemany(
            "UPDATE sensors SET last_seen = greatest(last_seen, %s) WHERE sensor_id = %s",
            [(time, sensor) for time, sensor, *_ in rows],
        )


def refresh_rollups(dsn: str) -> None:
    """What ``nakhon maintain`` does on the Apache edition, once."""

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for _ in range(50):
                if not (await ApacheRollupRefresher(conn).refresh()).skipped:
                    return
                await asyncio.sleep(0.2)

    with psycopg.connect(dsn) as conn:
        if timescaledb_edition(conn) == "apache":
            asyncio.run(run())


def test_cities_sensors_and_latest(stack: Stack, client: httpx.Client, city: str) -> None:
    ids = [f"{city}-{i}" for i in range(3)]
    seed_sensors(
        stack.dsn,
        city,
        [(ids[0], "air_quality", 13.7563, 100.5018), (ids[1], "air_quality", 13.7600, 100.5050),
         (ids[2], "noise", 18.7883, 98.9853)],
    )  # fmt: skip
    now = datetime.now(UTC).replace(microsecond=0)
    seed_readings(
        stack.dsn,
        [(now - timedelta(minutes=5), ids[0], "pm2_5", 20.0, city),
         (now - timedelta(minutes=1), ids[0], "pm2_5", 22.5, city),
         (now - timedelta(minutes=2), ids[0], "temperature", 31.0, city),
         (now - timedelta(minutes=3), ids[2], "noise_laeq", 65.0, city)],
    )  # fmt: skip

    cities = {c["city"]: c for c in client.get("/v1/cities").json()}
    assert cities[city]["sensors"] == 3
    assert datetime.fromisoformat(cities[city]["last_reading"]) == now - timedelta(minutes=1)

    page1 = client.get("/v1/sensors", params={"city": city, "limit": 2}).json()
    assert [s["sensor_id"] for s in page1["items"]] == ids[:2]
    page2 = client.get(
        "/v1/sensors", params={"city": city, "limit": 2, "after": page1["next_cursor"]}
    ).json()
    assert [s["sensor_id"] for s in page2["items"]] == ids[2:] and page2["next_cursor"] is None

    def found(**params: Any) -> list[str]:
        body = client.get("/v1/sensors", params={"city": city, **params}).json()
        return [s["sensor_id"] for s in body["items"]]

    assert found(kind="noise") == [ids[2]]
    assert found(metric="pm2_5") == [ids[0]]
    assert found(near="13.7563,100.5018", radius_m=100) == [ids[0]]
    assert found(near="13.7563,100.5018", radius_m=1000) == ids[:2]
    assert found(bbox="98,18,99,19") == [ids[2]]

    one = client.get(f"/v1/sensors/{ids[0]}").json()
    assert one["city"] == city and one["lat"] == 13.7563
    missing = client.get(f"/v1/sensors/{city}-nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    latest = client.get(f"/v1/sensors/{ids[0]}/latest").json()
    assert [(v["metric"], v["value"]) for v in latest["values"]] == [
        ("pm2_5", 22.5),
        ("temperature", 31.0),
    ]
    assert datetime.fromisoformat(latest["values"][0]["time"]) == now - timedelta(minutes=1)


_RAW_SQL = {
    "avg": "avg(value)",
    "min": "min(value)",
    "max": "max(value)",
    "sum": "sum(value)",
    "count": "count(*)::float8",
    "last": "last(value, time)",
}


def raw_series(
    dsn: str, where: str, params: dict[str, Any], agg: str, bucket: timedelta
) -> list[tuple[datetime, float]]:
    query = (
        f"SELECT time_bucket(%(bucket)s, time) AS b, {_RAW_SQL[agg]} FROM readings"
        f" WHERE {where} AND metric = 'pm2_5' AND time >= %(start)s AND time < %(end)s"
        " GROUP BY 1 ORDER BY 1"
    )
    with psycopg.connect(dsn) as conn:
        return [(r[0], r[1]) for r in conn.execute(query, {**params, "bucket": bucket})]


def assert_same_series(
    got: list[tuple[datetime, float]], expected: list[tuple[datetime, float]], case: object
) -> None:
    assert [t for t, _ in got] == [t for t, _ in expected], case
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-9), case


def test_the_cities_list_reads_the_registry_not_the_readings(stack: Stack) -> None:
    """A city with registered sensors and no readings must not cost a walk of every reading.

    The newest reading of each city is its sensors' ``last_seen``: the plan
    touches ``sensors`` only, however many readings are stored.
    """
    with psycopg.connect(stack.reader_dsn) as conn:
        plan = "\n".join(
            row[0] for row in conn.execute("EXPLAIN " + _CITIES, {"cities": None}).fetchall()
        )
    assert "sensors" in plan
    assert "readings" not in plan and "_hyper_" not in plan


def test_bucketed_series_equal_sql_over_raw_readings(
    stack: Stack, client: httpx.Client, city: str
) -> None:
    ids = [f"{city}-a", f"{city}-b"]
    seed_sensors(stack.dsn, city, [(i, "air_quality", 13.7, 100.5) for i in ids])
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = hour - timedelta(hours=4)
    rows = []
    for i in range(4 * 60 * 2 - 7):  # every 30 s (+ jitter), ending a few minutes before now
        t = start + timedelta(seconds=30 * i + (i * 7) % 29)
        rows.append((t, ids[i % 2], "pm2_5", float((i * 13) % 97) / 3, city))
    seed_readings(stack.dsn, rows)
    refresh_rollups(stack.dsn)

    cases = [
        ("5m", start, hour, "readings_1m"),
        ("1h", start, hour + timedelta(hours=1), "readings_1h"),
        ("15m", start + timedelta(seconds=10), hour, "readings"),
        ("30s", hour - timedelta(minutes=30), hour, "readings"),
    ]
    for bucket, s, e, source in cases:
        width = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1),
                 "15m": timedelta(minutes=15), "30s": timedelta(seconds=30)}[bucket]  # fmt: skip
        for agg in ("avg", "min", "max", "sum", "count", "last"):
            per_sensor = client.get(
                "/v1/series",
                params={"sensor_id": ids, "metric": "pm2_5", "start": s.isoformat(),
                        "end": e.isoformat(), "bucket": bucket, "agg": agg},
            ).json()  # fmt: skip
            assert per_sensor["source"] == source, (bucket, per_sensor)
            for series in per_sensor["series"]:
                expected = raw_series(
                    stack.dsn, "sensor_id = %(s)s",
                    {"s": series["sensor_id"], "start": s, "end": e},
                    agg, width,
                )  # fmt: skip
                got = [(datetime.fromisoformat(p["time"]), p["value"]) for p in series["points"]]
                assert_same_series(got, expected, (bucket, agg, series["sensor_id"]))
            if agg == "last":
                continue  # a city's "last" from rollups may tie-break between sensors
            whole = client.get(
                "/v1/series",
                params={"city": city, "metric": "pm2_5", "start": s.isoformat(),
                        "end": e.isoformat(), "bucket": bucket, "agg": agg},
            ).json()  # fmt: skip
            expected = raw_series(stack.dsn, "city = %(c)s", {"c": city, "start": s, "end": e},
                                  agg, width)  # fmt: skip
            got = [
                (datetime.fromisoformat(p["time"]), p["value"])
                for p in whole["series"][0]["points"]
            ]
            assert whole["series"][0]["city"] == city
            assert_same_series(got, expected, (bucket, agg, "city"))


def test_series_cap_fill_and_errors(stack: Stack, client: httpx.Client, city: str) -> None:
    sid = f"{city}-x"
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    seed_readings(stack.dsn, [(t0 + timedelta(minutes=1, seconds=5), sid, "pm2_5", 7.0, city)])
    refresh_rollups(stack.dsn)  # late data (below the threshold) shows after a refresh
    base = {"sensor_id": sid, "metric": "pm2_5", "start": t0.isoformat(), "bucket": "1m"}
    filled = client.get(
        "/v1/series",
        params={**base, "end": (t0 + timedelta(minutes=3)).isoformat(), "fill": "previous"},
    ).json()
    assert [p["value"] for p in filled["series"][0]["points"]] == [None, 7.0, 7.0]

    too_many = client.get(
        "/v1/series", params={**base, "end": (t0 + timedelta(days=2)).isoformat()}
    )
    assert too_many.status_code == 400
    assert too_many.json()["error"]["code"] == "too_many_points"
    assert "2880" in too_many.json()["error"]["message"]

    for params in (
        {**base, "end": t0.isoformat()},  # empty range
        {**base, "end": "tomorrow"},
        {**base, "end": (t0 + timedelta(hours=1)).isoformat(), "bucket": "5 minutes"},
        {"metric": "pm2_5", "start": t0.isoformat(), "end": (t0 + timedelta(hours=1)).isoformat()},
        {**base, "end": (t0 + timedelta(hours=1)).isoformat(), "agg": "median"},
        # buckets before year 1: date arithmetic overflows, still a JSON 400
        {**base, "start": "0001-01-01T00:00:00Z", "end": "0002-01-01T00:00:00Z", "bucket": "366d"},
    ):
        response = client.get("/v1/series", params=params)
        assert response.status_code == 400, params
        assert response.json()["error"]["message"]


def test_aqi_per_station(stack: Stack, client: httpx.Client, city: str) -> None:
    sid = f"{city}-aq"
    seed_sensors(stack.dsn, city, [(sid, "air_quality", 18.79, 98.98)])
    at = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = []
    for m in range(0, 23 * 60, 10):
        t = at - timedelta(minutes=m + 1)
        rows.append((t, sid, "pm2_5", 80.0, city))
        rows.append((t, sid, "pm10", 60.0, city))
    seed_readings(stack.dsn, rows)
    for standard, index in (("th", thai_aqi), ("us", us_aqi)):
        body = client.get(
            "/v1/aqi", params={"city": city, "standard": standard, "at": at.isoformat()}
        ).json()
        expected = index(Concentrations(pm2_5_24h=80.0, pm10_24h=60.0))
        assert expected is not None
        [station] = body["stations"]
        assert station["sensor_id"] == sid
        assert (station["aqi"], station["dominant"], station["band"], station["colour_hex"]) == (
            expected.index, expected.dominant, expected.band, expected.colour_hex
        )  # fmt: skip
    assert client.get("/v1/aqi", params={"city": city, "standard": "eu"}).status_code == 400


def test_vehicles_latest_and_track(stack: Stack, client: httpx.Client, city: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [
        (now - timedelta(minutes=m), f"{city}-bus{v}", 13.7 + m / 1000, 100.5, 30.0 + v, 90.0, city)
        for v in range(3)
        for m in range(10)
    ]
    with psycopg.connect(stack.dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO positions (time, vehicle_id, lat, lon, speed_kmh, heading, city)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
    latest = client.get("/v1/vehicles/latest", params={"city": city, "limit": 2}).json()
    assert [v["vehicle_id"] for v in latest["items"]] == [f"{city}-bus0", f"{city}-bus1"]
    assert datetime.fromisoformat(latest["items"][0]["time"]) == now
    rest = client.get(
        "/v1/vehicles/latest", params={"city": city, "after": latest["next_cursor"]}
    ).json()
    assert [v["vehicle_id"] for v in rest["items"]] == [f"{city}-bus2"]

    window = {
        "start": (now - timedelta(hours=1)).isoformat(),
        "end": (now + timedelta(seconds=1)).isoformat(),
    }
    seen: list[str] = []
    params: dict[str, Any] = {**window, "limit": 4}
    while True:
        page = client.get(f"/v1/vehicles/{city}-bus1/track", params=params).json()
        seen += [p["time"] for p in page["points"]]
        if page["next_cursor"] is None:
            break
        params["after"] = page["next_cursor"]
    assert len(seen) == 10 and seen == sorted(seen)


def test_probes_and_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    client.get("/v1/cities")
    text = client.get("/metrics").text
    assert 'nakhon_api_requests_total{method="GET",route="/v1/cities",status="200"}' in text
    assert "nakhon_api_request_duration_seconds_bucket" in text


def test_api_key_enforced(base_url: str, all_cities_key: str) -> None:
    with httpx.Client(base_url=base_url) as c:
        assert c.get("/v1/cities").status_code == 401
        bad = c.get("/v1/cities", headers={"X-API-Key": "nope"})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthorized"
        assert c.get("/v1/cities", headers={"X-API-Key": ""}).status_code == 401
        assert c.get("/v1/cities", headers={"X-API-Key": all_cities_key}).status_code == 200
        assert c.get("/healthz").status_code == 200  # probes stay open
        spec = c.get("/openapi.json").json()
        assert "X-API-Key" in str(spec["components"]["securitySchemes"])


def test_readyz_reports_an_unreachable_database() -> None:
    settings = Settings(
        db=DbSettings(api_dsn=SecretStr("postgresql://nakhon_reader:x@127.0.0.1:1/nakhon"),
                      pool_timeout_s=1.0)
    )  # fmt: skip
    with serve(settings) as url, httpx.Client(base_url=url, timeout=10) as c:
        assert c.get("/healthz").status_code == 200
        response = c.get("/readyz")
        assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
        assert "Error" not in response.text and "Timeout" not in response.text  # no class names
