"""API keys through a real server and database: cities, scopes, lifecycle, limits.

Each test registers its own cities (unique ids) and makes its own keys with
the library function behind ``nakhon api-keys create``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from nakhon.api.key_store import create_api_key, revoke_api_key
from nakhon.storage.migrate import migrate
from tests.integration.conftest import Stack
from tests.integration.test_api import (
    free_port,
    provision_key,
    seed_readings,
    seed_sensors,
    serve,
    settings_for,
)
from tools.sandbox import wait_until


def register_city(dsn: str, city: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO cities (city_id, name_en, name_th, province) VALUES (%s, %s, %s, %s)",
            (city, f"Test {city}", f"ทดสอบ {city}", "Test"),
        )


def seed_vehicle(dsn: str, city: str, vehicle: str, when: datetime) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO positions (time, vehicle_id, lat, lon, speed_kmh, heading, city)"
            " VALUES (%s, %s, 18.79, 98.98, 30, 90, %s)",
            (when, vehicle, city),
        )


@pytest.fixture(scope="module")
def base_url(stack: Stack) -> Iterator[str]:
    migrate(stack.dsn)
    with serve(settings_for(stack, key_cache_s=0.2, max_range_days=31)) as url:
        yield url


@pytest.fixture
def two_cities(stack: Stack) -> tuple[str, str]:
    """Two registered cities, each with a sensor (``<city>-s1``) and a bus (``<city>-bus``)."""
    tag = uuid.uuid4().hex[:8]
    cities = (f"k{tag}a", f"k{tag}b")
    now = datetime.now(UTC).replace(microsecond=0)
    for city in cities:
        register_city(stack.dsn, city)
        seed_sensors(stack.dsn, city, [(f"{city}-s1", "air_quality", 18.79, 98.98)])
        seed_readings(stack.dsn, [(now - timedelta(minutes=5), f"{city}-s1", "pm2_5", 20.0, city)])
        seed_vehicle(stack.dsn, city, f"{city}-bus", now - timedelta(minutes=1))
    return cities


def get(base_url: str, path: str, key: str | None, **params: object) -> httpx.Response:
    headers = {"X-API-Key": key} if key is not None else {}
    return httpx.get(f"{base_url}{path}", params=params, headers=headers, timeout=10)  # type: ignore[arg-type]


def test_a_key_sees_only_its_cities(
    stack: Stack, base_url: str, two_cities: tuple[str, str]
) -> None:
    mine, other = two_cities
    key = provision_key(stack.dsn, cities=[mine])
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start, end = now - timedelta(hours=1), now + timedelta(minutes=1)
    window = {"start": start.isoformat(), "end": end.isoformat()}
    listed = [c["city"] for c in get(base_url, "/v1/cities", key).json()]
    assert listed == [mine]
    assert get(base_url, f"/v1/sensors/{mine}-s1", key).status_code == 200
    assert get(base_url, "/v1/vehicles/latest", key, city=mine).json()["items"]
    own = get(base_url, "/v1/series", key, metric="pm2_5", sensor_id=f"{mine}-s1", **window)
    assert own.status_code == 200 and own.json()["series"][0]["points"]
    page = get(base_url, "/v1/sensors", key).json()
    assert {s["city"] for s in page["items"]} == {mine}

    # Another city's objects answer exactly as objects that do not exist.
    for path, params in [
        (f"/v1/sensors/{other}-s1", {}),
        (f"/v1/sensors/{other}-s1/latest", {}),
        ("/v1/sensors", {"city": other}),
        ("/v1/series", {"metric": "pm2_5", "sensor_id": f"{other}-s1", **window}),
        ("/v1/series", {"metric": "pm2_5", "city": other, **window}),
        ("/v1/aqi", {"city": other}),
        ("/v1/vehicles/latest", {"city": other}),
        (f"/v1/vehicles/{other}-bus/track", window),
    ]:
        foreign = get(base_url, path, key, **params)
        assert foreign.status_code == 404, (path, foreign.text)
        assert foreign.json()["error"]["code"] == "not_found"
        missing = path.replace(other, f"{other}zz")
        renamed = {k: str(v).replace(other, f"{other}zz") for k, v in params.items()}
        unknown = get(base_url, missing, key, **renamed)
        assert unknown.status_code == 404, (missing, unknown.text)
    assert get(base_url, f"/v1/vehicles/{mine}-bus/track", key, **window).json()["points"]


def test_a_missing_scope_is_403(stack: Stack, base_url: str, two_cities: tuple[str, str]) -> None:
    mine, _ = two_cities
    key = provision_key(stack.dsn, cities=[mine], scopes=["readings", "aqi", "sensors"])
    r = get(base_url, "/v1/vehicles/latest", key, city=mine)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    aqi_only = provision_key(stack.dsn, cities=[mine], scopes=["aqi"])
    assert get(base_url, "/v1/aqi", aqi_only, city=mine).status_code == 200
    assert get(base_url, f"/v1/sensors/{mine}-s1", aqi_only).status_code == 403
    assert get(base_url, f"/v1/sensors/{mine}-s1/latest", aqi_only).status_code == 403


def test_revoked_expired_missing_and_bad_keys_are_401(
    stack: Stack, base_url: str, two_cities: tuple[str, str]
) -> None:
    mine, _ = two_cities
    key = provision_key(stack.dsn, cities=[mine])
    assert get(base_url, "/v1/cities", key).status_code == 200
    with psycopg.connect(stack.dsn) as conn:
        assert revoke_api_key(conn, key.split("_")[1])
    time.sleep(0.3)  # the server's key cache (key_cache_s=0.2)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    expired = provision_key(stack.dsn, cities=[mine], expires_at=soon)
    assert get(base_url, "/v1/cities", expired).status_code == 200
    time.sleep(1.3)
    tampered = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    for bad in (key, expired, None, "", "nope", tampered, key + "x"):
        r = get(base_url, "/v1/cities", bad)
        assert r.status_code == 401, bad
        assert r.json()["error"]["code"] == "unauthorized"


def test_rate_limit_answers_429_with_retry_after(stack: Stack) -> None:
    key, other = provision_key(stack.dsn), provision_key(stack.dsn)
    # One token every 4 s: the four requests below take far less, even on a busy machine.
    with serve(settings_for(stack, rate_per_s=0.25, rate_burst=3)) as url:
        assert get(url, "/v1/cities", other).status_code == 200  # server and pool warm
        codes = [get(url, "/v1/cities", key).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = get(url, "/v1/cities", key)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 4
        assert get(url, "/v1/cities", other).status_code == 200  # buckets are per key


def test_range_and_point_limits(stack: Stack, base_url: str, two_cities: tuple[str, str]) -> None:
    mine, _ = two_cities
    key = provision_key(stack.dsn, cities=[mine])
    end = datetime(2026, 6, 1, tzinfo=UTC)
    long = {"start": (end - timedelta(days=40)).isoformat(), "end": end.isoformat()}
    r = get(base_url, "/v1/series", key, metric="pm2_5", city=mine, bucket="1d", **long)
    assert r.status_code == 400 and r.json()["error"]["code"] == "range_too_long"
    r = get(base_url, f"/v1/vehicles/{mine}-bus/track", key, **long)
    assert r.status_code == 400 and r.json()["error"]["code"] == "range_too_long"
    short = {"start": (end - timedelta(days=30)).isoformat(), "end": end.isoformat()}
    r = get(base_url, "/v1/series", key, metric="pm2_5", city=mine, bucket="1s", **short)
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_points"


def test_public_mode_serves_only_its_scopes(stack: Stack, two_cities: tuple[str, str]) -> None:
    mine, _ = two_cities
    with serve(settings_for(stack, public=True)) as url:
        assert get(url, f"/v1/sensors/{mine}-s1", None).status_code == 200
        r = get(url, "/v1/vehicles/latest", None, city=mine)
        assert r.status_code == 403  # never vehicles by default
        assert get(url, "/v1/cities", "nope").status_code == 401  # a bad key is never public


@contextmanager
def api_process(env: dict[str, str]) -> Iterator[str]:
    """``nakhon api`` as its own process; yield its base URL once /healthz answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nakhon.cli", "api"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{env['NAKHON_API_PORT']}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "nakhon api did not answer"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    # uvicorn drains, then re-raises the SIGTERM it caught: -15 is a clean stop too.
    assert proc.returncode in (0, -signal.SIGTERM) and "shutdown complete" in err, err


def test_closed_by_default_the_api_refuses_to_start_without_a_key(stack: Stack) -> None:
    """``nakhon api`` on a fresh database: no active key, no start (exit 2); one key, it serves."""
    with stack.fresh_database() as fresh:
        migrate(fresh.dsn)
        env = {
            "PATH": "/usr/bin:/bin",
            "NAKHON_ENV_FILE": "/dev/null",
            "NAKHON_DB_API_DSN": fresh.reader_dsn,
            "NAKHON_API_PORT": str(free_port()),
            "NAKHON_API_STARTUP_WAIT_S": "5",
        }
        cmd = [sys.executable, "-m", "nakhon.cli", "api"]

        def refused() -> subprocess.CompletedProcess[str]:
            return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)

        empty = refused()
        assert empty.returncode == 2, empty.stderr
        assert "no active API key" in empty.stderr and "nakhon api-keys create" in empty.stderr
        # A revoked key and an expired one are no key.
        with psycopg.connect(fresh.dsn) as conn:
            dead, _ = create_api_key(conn, "revoked", all_cities=True)
            revoke_api_key(conn, dead.id)
        provision_key(fresh.dsn, expires_at=datetime.now(UTC) - timedelta(seconds=1))
        assert refused().returncode == 2

        # Public mode is the explicit way to serve without keys (never vehicles by default).
        with api_process({**env, "NAKHON_API_PUBLIC": "true"}) as url:
            assert get(url, "/v1/cities", None).status_code == 200
            assert get(url, "/v1/vehicles/latest", None, city="bangkok").status_code == 403

        key = provision_key(fresh.dsn)
        with api_process(env) as url:
            assert get(url, "/readyz", None).status_code == 200
            assert get(url, "/v1/cities", key).status_code == 200
            assert get(url, "/v1/cities", None).status_code == 401

    unreachable = "postgresql://nakhon_reader:x@127.0.0.1:1/nakhon"
    down = subprocess.run(
        cmd,
        env={**env, "NAKHON_DB_API_DSN": unreachable, "NAKHON_API_STARTUP_WAIT_S": "1"},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert down.returncode == 3 and "did not answer" in down.stderr, down.stderr


def test_slow_requests_leave_room_for_a_cheap_one(
    stack: Stack, two_cities: tuple[str, str]
) -> None:
    """Four track requests stuck behind a lock on positions; a sensor lookup still answers."""
    mine, _ = two_cities
    key = provision_key(stack.dsn, cities=[mine])
    now = datetime.now(UTC)
    window = {"start": (now - timedelta(hours=1)).isoformat(), "end": now.isoformat()}
    settings = settings_for(stack, statement_timeout_s=6.0)
    settings.db.pool_max = 4
    settings.db.pool_min = 4
    with serve(settings) as url, psycopg.connect(stack.dsn) as locker:
        assert get(url, f"/v1/sensors/{mine}-s1", key).status_code == 200  # key cached, pool warm
        locker.execute("LOCK TABLE positions IN ACCESS EXCLUSIVE MODE")
        slow: list[int] = []
        threads = [
            threading.Thread(
                target=lambda: slow.append(
                    get(url, f"/v1/vehicles/{mine}-bus/track", key, **window).status_code
                )
            )
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        # The fact, not a pause: the three heavy slots' queries wait on the lock.
        wait_until(lambda: _waiting_on_positions(stack.dsn) == 3, 15, "3 queries on the lock")
        started = time.monotonic()
        cheap = get(url, f"/v1/sensors/{mine}-s1", key)
        took = time.monotonic() - started
        assert cheap.status_code == 200 and took < 1.0, took
        assert not slow  # the slow ones really were still stuck
        locker.rollback()  # release the lock
        for t in threads:
            t.join(timeout=15)
        assert sorted(slow) == [200, 200, 200, 200]


def _waiting_on_positions(dsn: str) -> int:
    """Sessions waiting for a lock on ``positions`` (pg_locks is readable by every role)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE relation = 'positions'::regclass AND NOT granted"
        ).fetchone()
    return int(row[0]) if row else 0


def test_cli_prints_the_key_once_and_lists_without_it(stack: Stack) -> None:
    city = f"k{uuid.uuid4().hex[:8]}"
    register_city(stack.dsn, city)
    env = {"NAKHON_DB_DSN": stack.dsn, "NAKHON_ENV_FILE": "/dev/null", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "nakhon.cli", "api-keys"]
    made = subprocess.run(
        [*cmd, "create", "--name", "cli test", "--city", city, "--scope", "aqi", "--json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = json.loads(made.stdout)
    assert out["key"].startswith(f"nk_{out['id']}_") and out["scopes"] == ["aqi"]
    listed = subprocess.run(
        [*cmd, "list", "--json"], env=env, capture_output=True, text=True, check=True
    )
    assert out["id"] in listed.stdout and out["key"] not in listed.stdout
    bad = subprocess.run(
        [*cmd, "create", "--name", "x", "--city", "no_such_city_zz"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "unregistered" in bad.stderr
    subprocess.run([*cmd, "revoke", out["id"]], env=env, check=True, capture_output=True)
