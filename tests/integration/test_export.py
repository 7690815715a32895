"""``nakhon export`` and ``GET /v1/export`` against the real database.

Each test seeds a city of its own (registered, so keys can name it), with
sensors and readings around and inside the exported range, then compares the
CSV with SQL over ``readings`` for the same range, row for row.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nakhon.domain.catalogue import METRICS
from nakhon.storage.migrate import migrate
from tests.integration.conftest import REPO, Stack
from tests.integration.test_api import (
    provision_key,
    refresh_rollups,
    seed_readings,
    seed_sensors,
    serve,
    settings_for,
)

METRICS_EXPORTED = ("pm2_5", "temperature")


@pytest.fixture(scope="module")
def base_url(stack: Stack) -> Iterator[str]:
    migrate(stack.dsn)
    with serve(settings_for(stack, max_range_days=30)) as url:
        yield url


@pytest.fixture
def seeded(stack: Stack) -> tuple[str, datetime, datetime]:
    """A fresh city with 3 sensors and readings; (city, start, end) of a 3-hour range."""
    migrate(stack.dsn)
    city = f"x{uuid.uuid4().hex[:10]}"
    with psycopg.connect(stack.dsn) as conn:
        conn.execute(
            "INSERT INTO cities (city_id, name_en, name_th, province)"
            " VALUES (%s, 'Export test', 'ทดสอบ', 'test')",
            (city,),
        )
    ids = [f"{city}-{i}" for i in range(3)]
    seed_sensors(
        stack.dsn,
        city,
        [(ids[0], "air_quality", 13.7563, 100.5018), (ids[1], "air_quality", 13.76, 100.505),
         (ids[2], "weather", 18.7883, 98.9853)],
    )  # fmt: skip
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(hours=3)
    rows: list[tuple[datetime, str, str, float, str]] = []
    for step in range(-2, 3 * 12 + 2):  # every 5 minutes, a little before and after the range
        t = start + timedelta(minutes=5 * step, microseconds=1234 * (step % 3))
        for n, sid in enumerate(ids):
            rows.append((t, sid, "pm2_5", 10 + step * 0.1 + n / 3, city))
            rows.append((t, sid, "temperature", 30.0 - step / 7, city))
            rows.append((t, sid, "humidity", 70.0, city))  # not exported
    seed_readings(stack.dsn, rows)
    return city, start, end


def run_export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nakhon.cli", "export", *args],
        cwd=REPO,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def export_args(city: str, start: datetime, end: datetime, out: Path) -> list[str]:
    metric_args = [arg for m in METRICS_EXPORTED for arg in ("--metric", m)]
    return [
        "--city", city, *metric_args, "--since", start.isoformat(), "--until", end.isoformat(),
        "--out", str(out),
    ]  # fmt: skip


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def sql_rows(dsn: str, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


def test_command_writes_the_readings_sensors_and_package(
    stack: Stack, seeded: tuple[str, datetime, datetime], tmp_path: Path
) -> None:
    city, start, end = seeded
    out = tmp_path / "readings.csv"
    done = run_export(*export_args(city, start, end, out), "--licence", "CC0-1.0")
    assert done.returncode == 0, done.stderr
    assert "wrote 216 rows of 3 sensors" in done.stdout

    header, *rows = read_csv(out.read_text(encoding="utf-8"))
    assert header == ["time", "city", "sensor_id", "metric", "value", "unit"]
    expected = sql_rows(
        stack.dsn,
        "SELECT time, city, sensor_id, metric, value FROM readings"
        " WHERE city = %(city)s AND metric = ANY(%(metrics)s) AND time >= %(start)s"
        " AND time < %(end)s ORDER BY time, sensor_id, metric",
        {"city": city, "metrics": list(METRICS_EXPORTED), "start": start, "end": end},
    )
    assert len(expected) == 3 * 36 * 2
    got = [
        (datetime.fromisoformat(t), c, s, m, float(v), u) for t, c, s, m, v, u in rows
    ]  # fromisoformat reads the Z; floats are exact (shortest round-trip text)
    assert got == [(*row, METRICS[row[3]].unit) for row in expected]
    assert all(r[0].endswith("Z") for r in rows)
    assert not out.with_name("readings.csv.part").exists()

    package = json.loads((tmp_path / "datapackage.json").read_text(encoding="utf-8"))
    for key in ("profile", "name", "title", "description", "licenses", "resources", "sources"):
        assert package[key], key
    assert package["licenses"][0]["name"] == "CC0-1.0"
    assert package["temporal"] == {
        "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    readings, sensors = package["resources"]
    assert (readings["name"], readings["path"], readings["format"]) == (
        "readings",
        "readings.csv",
        "csv",
    )
    assert [f["name"] for f in readings["schema"]["fields"]] == header
    assert readings["rows"] == len(rows)
    value = next(f for f in readings["schema"]["fields"] if f["name"] == "value")
    assert value["units"] == {"pm2_5": "µg/m³", "temperature": "°C"}
    assert all(f["type"] for f in readings["schema"]["fields"])

    sensor_header, *sensor_rows = read_csv((tmp_path / sensors["path"]).read_text("utf-8"))
    assert sensor_header == [f["name"] for f in sensors["schema"]["fields"]]
    assert [(r[0], float(r[4]), float(r[5])) for r in sensor_rows] == [
        (f"{city}-0", 13.7563, 100.5018),
        (f"{city}-1", 13.76, 100.505),
        (f"{city}-2", 18.7883, 98.9853),
    ]


def test_command_bucketed_equals_sql_over_raw_readings(
    stack: Stack, seeded: tuple[str, datetime, datetime], tmp_path: Path
) -> None:
    city, start, end = seeded
    refresh_rollups(stack.dsn)
    out = tmp_path / "hourly.csv"
    done = run_export(*export_args(city, start, end, out), "--bucket", "1h")
    assert done.returncode == 0, done.stderr
    assert "from readings_1h" in done.stdout

    header, *rows = read_csv(out.read_text(encoding="utf-8"))
    assert header[:4] == ["bucket_start", "city", "sensor_id", "metric"]
    expected = sql_rows(
        stack.dsn,
        "SELECT time_bucket('1 hour', time), city, sensor_id, metric,"
        " avg(value), min(value), max(value), count(*) FROM readings"
        " WHERE city = %(city)s AND metric = ANY(%(metrics)s) AND time >= %(start)s"
        " AND time < %(end)s GROUP BY 1, 2, 3, 4 ORDER BY 1, 3, 4",
        {"city": city, "metrics": list(METRICS_EXPORTED), "start": start, "end": end},
    )
    assert len(rows) == len(expected) == 3 * 3 * 2
    for row, want in zip(rows, expected, strict=True):
        t, c, s, m, avg, low, high, count, unit = row
        assert (datetime.fromisoformat(t), c, s, m) == want[:4]
        assert float(avg) == pytest.approx(want[4], rel=1e-12)
        assert (float(low), float(high), int(count)) == want[5:]
        assert unit == METRICS[m].unit


def test_command_refuses_bad_arguments(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    out = tmp_path / "x.csv"
    backwards = run_export(*export_args("bangkok", now, now - timedelta(hours=1), out))
    assert backwards.returncode == 2 and "--since must be before --until" in backwards.stderr
    unknown = run_export(
        *export_args("bangkok", now - timedelta(hours=1), now, out), "--format", "xlsx"
    )
    assert unknown.returncode == 2 and "--format" in unknown.stderr
    assert not out.exists()


@pytest.mark.parametrize("bucket", [None, "1h"])
def test_parquet_reads_back_equal_to_the_csv(
    stack: Stack,
    seeded: tuple[str, datetime, datetime],
    tmp_path: Path,
    bucket: str | None,
) -> None:
    city, start, end = seeded
    if bucket:
        refresh_rollups(stack.dsn)
    extra = ["--bucket", bucket] if bucket else []
    csv_out, parquet_out = tmp_path / "csv" / "readings.csv", tmp_path / "pq" / "readings.parquet"
    csv_out.parent.mkdir()
    parquet_out.parent.mkdir()
    assert run_export(*export_args(city, start, end, csv_out), *extra).returncode == 0
    done = run_export(*export_args(city, start, end, parquet_out), *extra, "--format", "parquet")
    assert done.returncode == 0, done.stderr
    assert not parquet_out.with_name("readings.parquet.part").exists()

    table = pq.read_table(parquet_out)
    header, *rows = read_csv(csv_out.read_text(encoding="utf-8"))
    assert table.column_names == header
    types = dict(zip(table.column_names, table.schema.types, strict=True))
    assert types[header[0]] == pa.timestamp("us", tz="UTC")
    assert types["city"] == types["sensor_id"] == types["metric"] == types["unit"] == pa.string()
    for number in ("value",) if bucket is None else ("avg", "min", "max"):
        assert types[number] == pa.float64()
    assert len(rows) == table.num_rows == (216 if bucket is None else 18)

    def typed(name: str, text: str) -> object:
        if types[name] == pa.float64():
            return float(text)  # the CSV's shortest round-trip text: exact
        if types[name] == pa.int64():
            return int(text)
        if pa.types.is_timestamp(types[name]):
            return datetime.fromisoformat(text)
        return text

    expected = [{n: typed(n, v) for n, v in zip(header, row, strict=True)} for row in rows]
    assert table.to_pylist() == expected

    package = json.loads((parquet_out.parent / "datapackage.json").read_text(encoding="utf-8"))
    readings = package["resources"][0]
    assert (readings["path"], readings["format"]) == ("readings.parquet", "parquet")
    assert readings["mediatype"] == "application/vnd.apache.parquet"
    assert readings["rows"] == table.num_rows
    assert "encoding" not in readings


def test_api_streams_the_same_csv_and_checks_the_key(
    stack: Stack, seeded: tuple[str, datetime, datetime], base_url: str, tmp_path: Path
) -> None:
    city, start, end = seeded
    out = tmp_path / "readings.csv"
    assert run_export(*export_args(city, start, end, out)).returncode == 0
    params: dict[str, Any] = {
        "city": city,
        "metric": list(METRICS_EXPORTED),
        "start": start.isoformat(),
        "end": end.isoformat(),
    }

    def get(key: str, **changes: Any) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=30, headers={"X-API-Key": key}) as client:
            return client.get("/v1/export", params={**params, **changes})

    own = provision_key(stack.dsn, "tests: export", cities=[city])
    answer = get(own)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.content == out.read_bytes()

    other_city = provision_key(stack.dsn, "tests: export, other city", cities=["bangkok"])
    assert get(other_city).status_code == 404
    no_readings = provision_key(stack.dsn, "tests: export, aqi only", cities=[city], scopes=["aqi"])
    assert get(no_readings).status_code == 403
    too_long = get(own, start=(end - timedelta(days=31)).isoformat())
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "range_too_long"
    assert get(own, metric="PM 2.5").status_code == 400

    hourly = get(own, bucket="1h")
    assert hourly.status_code == 200
    assert hourly.text.splitlines()[0].startswith("bucket_start,")


def test_api_serves_the_datapackage_and_sensors_and_its_urls_fetch(
    stack: Stack, seeded: tuple[str, datetime, datetime], base_url: str, tmp_path: Path
) -> None:
    city, start, end = seeded
    out = tmp_path / "readings.csv"
    assert run_export(*export_args(city, start, end, out), "--licence", "CC0-1.0").returncode == 0
    cli_package = json.loads((tmp_path / "datapackage.json").read_text(encoding="utf-8"))
    params: dict[str, Any] = {
        "city": city,
        "metric": list(METRICS_EXPORTED),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "licence": "CC0-1.0",
    }
    key = provision_key(stack.dsn, "tests: export package", cities=[city])
    with httpx.Client(base_url=base_url, timeout=30, headers={"X-API-Key": key}) as client:
        answer = client.get("/v1/export/datapackage.json", params=params)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        package = answer.json()
        # Structurally a Tabular Data Package, and the CLI's one but for paths and times.
        assert package["profile"] == "tabular-data-package"
        assert re.fullmatch(r"[a-z0-9._-]+", package["name"])
        for key_name in ("title", "description", "licenses", "sources", "created", "keywords"):
            assert package[key_name], key_name
        assert package["licenses"][0] == cli_package["licenses"][0]
        assert package["temporal"] == cli_package["temporal"]
        assert (package["title"], package["description"]) == (
            cli_package["title"],
            cli_package["description"],
        )
        readings, sensors = package["resources"]
        cli_readings, cli_sensors = cli_package["resources"]
        for resource, cli_resource in ((readings, cli_readings), (sensors, cli_sensors)):
            assert resource["profile"] == "tabular-data-resource"
            assert resource["schema"] == cli_resource["schema"]
            assert (resource["format"], resource["mediatype"]) == ("csv", "text/csv")
            assert resource["path"].startswith(base_url + "/v1/export")
        fields = {f["name"]: f for f in readings["schema"]["fields"]}
        assert fields["value"]["units"] == {"pm2_5": "µg/m³", "temperature": "°C"}
        assert fields["time"]["type"] == "datetime"
        sensor_fields = {f["name"]: f for f in sensors["schema"]["fields"]}
        assert sensor_fields["lat"]["units"] == sensor_fields["lon"]["units"] == "degrees (WGS 84)"

        # Its resources' URLs fetch, with the same key: the CLI's bytes.
        got = client.get(readings["path"])
        assert got.status_code == 200, got.text
        assert got.content == out.read_bytes()
        got_sensors = client.get(sensors["path"])
        assert got_sensors.status_code == 200, got_sensors.text
        assert got_sensors.headers["content-type"].startswith("text/csv")
        assert got_sensors.content == (tmp_path / "sensors.csv").read_bytes()
        header, *rows = read_csv(got_sensors.text)
        assert header == [f["name"] for f in sensors["schema"]["fields"]]
        assert [(r[0], float(r[4]), float(r[5])) for r in rows] == [
            (f"{city}-0", 13.7563, 100.5018),
            (f"{city}-1", 13.76, 100.505),
            (f"{city}-2", 18.7883, 98.9853),
        ]

        hourly = client.get("/v1/export/datapackage.json", params={**params, "bucket": "1h"})
        assert hourly.status_code == 200, hourly.text
        hourly_readings = hourly.json()["resources"][0]
        assert "bucket=1h" in hourly_readings["path"]
        assert client.get(hourly_readings["path"]).text.startswith("bucket_start,")
        assert (
            client.get("/v1/export/datapackage.json", params={**params, "licence": "x"}).json()[
                "error"
            ]["code"]
            == "invalid_parameter"
        )


def test_api_export_metadata_checks_the_key_as_the_export_does(
    stack: Stack, seeded: tuple[str, datetime, datetime], base_url: str
) -> None:
    city, start, end = seeded
    params: dict[str, Any] = {
        "city": city,
        "metric": list(METRICS_EXPORTED),
        "start": start.isoformat(),
        "end": end.isoformat(),
    }
    paths = ("/v1/export", "/v1/export/datapackage.json", "/v1/export/sensors.csv")

    def get(path: str, key: str, **changes: Any) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=30, headers={"X-API-Key": key}) as client:
            return client.get(path, params={**params, **changes})

    # A key of another city: the same 404 as /v1/export, for each, never the sensors.
    other_city = provision_key(stack.dsn, "tests: export, other city", cities=["bangkok"])
    answers = [get(path, other_city) for path in paths]
    assert [a.status_code for a in answers] == [404, 404, 404]
    assert answers[1].json() == answers[0].json() == answers[2].json()
    assert city + "-0" not in answers[2].text
    # A key without the readings scope: 403 for each.
    aqi_only = provision_key(stack.dsn, "tests: export, aqi", cities=[city], scopes=["aqi"])
    assert [get(path, aqi_only).status_code for path in paths] == [403, 403, 403]
    # The sensors' places also need the sensors scope (as /v1/sensors does).
    readings_only = provision_key(
        stack.dsn, "tests: export, readings", cities=[city], scopes=["readings"]
    )
    assert [get(path, readings_only).status_code for path in paths] == [200, 200, 403]
    assert "sensors" in get(paths[2], readings_only).json()["error"]["message"]
    # The range limit and parameter checks are the export's.
    own = provision_key(stack.dsn, "tests: export, own", cities=[city])
    too_long = (end - timedelta(days=31)).isoformat()
    for path in paths:
        answer = get(path, own, start=too_long)
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "range_too_long"
        assert get(path, own, metric="PM 2.5").status_code == 400
