"""``nakhon sensors import`` against the real TimescaleDB: upsert, idempotence, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from nakhon.storage.sensor_registry import (
    PROGRESS_EVERY,
    ImportResult,
    SensorRecord,
    import_sensors,
    parse_csv,
    parse_geojson,
)
from tests.integration.conftest import Stack
from tests.integration.pipeline_harness import owner_dsn, run_nakhon

Row = tuple[object, ...]


@pytest.fixture
def prefix(stack: Stack) -> Iterator[str]:
    """A sensor id prefix (and registered city) of this test's own; all deleted after."""
    tag = f"reg{uuid.uuid4().hex[:10]}"
    with psycopg.connect(owner_dsn()) as conn:
        conn.execute(
            "INSERT INTO cities (city_id, name_en, name_th, province, note)"
            " VALUES (%s, 'Test city', 'เมืองทดสอบ', 'Test', 'a test fixture')",
            (tag,),
        )
    yield tag
    with psycopg.connect(owner_dsn()) as conn:
        conn.execute("DELETE FROM sensors WHERE sensor_id LIKE %s", (tag + "%",))
        conn.execute("DELETE FROM cities WHERE city_id = %s", (tag,))


@pytest.fixture
def conn(stack: Stack) -> Iterator[psycopg.Connection[Row]]:
    # Autocommit: each import is its own transaction, and the row reads in
    # between hold no snapshot or locks that the cleanup would wait on.
    with psycopg.connect(owner_dsn(), autocommit=True) as connection:
        yield connection


def rows(conn: psycopg.Connection[Row], prefix: str) -> list[Row]:
    return conn.execute(
        "SELECT sensor_id, city, kind, name, lat, lon, metadata, source, first_seen, last_seen"
        " FROM sensors WHERE sensor_id LIKE %s ORDER BY sensor_id",
        (prefix + "%",),
    ).fetchall()


def registry_csv(p: str) -> str:
    return (
        "id,city,kind,name,lat,lon,installed\n"
        f"{p}-a,Chiang_Mai,air_quality,Tha Phae Gate,18.7877,98.9937,2024-01-15\n"
        f"{p}-b,chiang_mai,noise,,18.79,98.98,\n"
        f"{p}-c,{p},traffic,Nimman,,,\n"
    )


def test_csv_import_then_reimport_changes_nothing(
    conn: psycopg.Connection[Row], prefix: str
) -> None:
    parsed = parse_csv(registry_csv(prefix))
    assert parsed.errors == []
    assert import_sensors(conn, parsed.records) == ImportResult(inserted=3, updated=0, unchanged=0)
    expected = [
        (f"{prefix}-a", "chiang_mai", "air_quality", "Tha Phae Gate", 18.7877, 98.9937,
         {"installed": "2024-01-15"}, "registry", None, None),
        (f"{prefix}-b", "chiang_mai", "noise", None, 18.79, 98.98, {}, "registry", None, None),
        (f"{prefix}-c", prefix, "traffic", "Nimman", None, None, {}, "registry", None, None),
    ]  # fmt: skip
    assert rows(conn, prefix) == expected
    xmin_before = conn.execute(
        "SELECT array_agg(xmin::text ORDER BY sensor_id) FROM sensors WHERE sensor_id LIKE %s",
        (prefix + "%",),
    ).fetchone()

    again = parse_csv(registry_csv(prefix))
    assert import_sensors(conn, again.records) == ImportResult(inserted=0, updated=0, unchanged=3)
    assert rows(conn, prefix) == expected
    xmin_after = conn.execute(
        "SELECT array_agg(xmin::text ORDER BY sensor_id) FROM sensors WHERE sensor_id LIKE %s",
        (prefix + "%",),
    ).fetchone()
    assert xmin_after == xmin_before  # not even rewritten with equal values

    changed = registry_csv(prefix).replace("Nimman", "Nimmanhaemin") + f"{prefix}-d,lampang,,,,,\n"
    result = import_sensors(conn, parse_csv(changed).records)
    assert result == ImportResult(inserted=1, updated=1, unchanged=2)
    assert rows(conn, prefix)[2][3] == "Nimmanhaemin"


def test_geojson_import(conn: psycopg.Connection[Row], prefix: str) -> None:
    text = json.dumps(
        {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [102.824, 16.432]},
                    "properties": {"id": f"{prefix}-kk1", "city": "khon_kaen",
                                   "kind": "air_quality", "name": "Bueng Kaen Nakhon",
                                   "vendor": "Acme", "channels": [1, 2]},
                },
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [999, 16.4]},
                    "properties": {"id": f"{prefix}-bad", "city": "khon_kaen"},
                },
            ],
        }
    )  # fmt: skip
    parsed = parse_geojson(text)
    assert [str(e) for e in parsed.errors] == [
        f"features[1] (id '{prefix}-bad'): lon: Input should be less than or equal to 180 (got 999)"
    ]
    assert import_sensors(conn, parsed.records) == ImportResult(1, 0, 0)
    assert rows(conn, prefix) == [
        (f"{prefix}-kk1", "khon_kaen", "air_quality", "Bueng Kaen Nakhon", 16.432, 102.824,
         {"vendor": "Acme", "channels": [1, 2]}, "registry", None, None),
    ]  # fmt: skip
    assert import_sensors(conn, parse_geojson(text).records) == ImportResult(0, 0, 1)


def test_a_sensor_seen_in_data_keeps_its_first_and_last_seen(
    conn: psycopg.Connection[Row], prefix: str
) -> None:
    first = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    last = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    with conn.transaction():
        conn.execute(
            "INSERT INTO sensors (sensor_id, city, kind, first_seen, last_seen)"
            " VALUES (%s, 'lorawan', NULL, %s, %s)",
            (f"{prefix}-lora", first, last),
        )
    record = SensorRecord(sensor_id=f"{prefix}-lora", city="rayong", kind="water_level")
    assert import_sensors(conn, [record]) == ImportResult(0, 1, 0)
    assert rows(conn, prefix) == [
        (f"{prefix}-lora", "rayong", "water_level", None, None, None, {}, "registry", first, last)
    ]


def test_sensors_of_an_unregistered_city_are_refused_and_the_others_imported(
    conn: psycopg.Connection[Row], prefix: str
) -> None:
    text = registry_csv(prefix) + f"{prefix}-x,{prefix}_nowhere,air_quality,,,,\n"
    parsed = parse_csv(text)
    result = import_sensors(conn, parsed.records)
    assert (result.inserted, result.updated, result.unchanged) == (3, 0, 0)
    assert [r.sensor_id for r in result.refused] == [f"{prefix}-x"]
    errors = parsed.refuse(result.refused)
    assert [str(e) for e in errors] == [
        f"line 5: city '{prefix}_nowhere' is not registered; add it with nakhon cities add"
    ]
    assert [r[0] for r in rows(conn, prefix)] == [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]


def test_dry_run_writes_nothing(conn: psycopg.Connection[Row], prefix: str) -> None:
    records = parse_csv(registry_csv(prefix)).records
    assert import_sensors(conn, records, dry_run=True) == ImportResult(3, 0, 0)
    assert rows(conn, prefix) == []


def test_a_large_registry_is_one_copy_with_progress(
    conn: psycopg.Connection[Row], prefix: str
) -> None:
    n = 2 * PROGRESS_EVERY + 17
    lines = ["id,city,kind,lat,lon"] + [
        f"{prefix}-{i:05d},bangkok,air_quality,{13 + i / 1e5:.5f},100.5" for i in range(n)
    ]
    records = parse_csv("\n".join(lines)).records
    seen: list[tuple[int, int]] = []
    result = import_sensors(conn, records, progress=lambda done, total: seen.append((done, total)))
    assert result == ImportResult(n, 0, 0)
    assert seen == [(PROGRESS_EVERY, n), (2 * PROGRESS_EVERY, n), (n, n)]
    count = conn.execute(
        "SELECT count(*) FROM sensors WHERE sensor_id LIKE %s AND source = 'registry'",
        (prefix + "%",),
    ).fetchone()
    assert count == (n,)


def nakhon(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAKHON_")}
    env["NAKHON_DB_DSN"] = owner_dsn()
    return run_nakhon(*args, env=env, timeout_s=60)


def test_cli_exit_codes(conn: psycopg.Connection[Row], prefix: str, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(registry_csv(prefix))
    done = nakhon("sensors", "import", str(good))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "good.csv: 3 rows, imported 3 (3 new, 0 updated, 0 unchanged), 0 rejected"
    )
    done = nakhon("sensors", "import", str(good))
    assert (done.returncode, done.stdout.strip()) == (
        0,
        "good.csv: 3 rows, imported 3 (0 new, 0 updated, 3 unchanged), 0 rejected",
    )

    mixed = tmp_path / "mixed.txt"
    mixed.write_text(f"sensor_id,city,lat,lon\n{prefix}-e,rayong,12.68,101.28\nBad Id,rayong,,\n")
    done = nakhon("sensors", "import", "--format", "csv", str(mixed))
    assert done.returncode == 1
    assert "rejected: line 3: sensor_id: must be 1–64 characters" in done.stderr
    assert done.stdout.strip() == (
        "mixed.txt: 2 rows, imported 1 (1 new, 0 updated, 0 unchanged), 1 rejected"
    )
    assert [r[0] for r in rows(conn, prefix)][-1] == f"{prefix}-e"  # the good row is in

    dry = tmp_path / "dry.geojson"
    dry.write_text(
        json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature",
                    "properties": {"id": f"{prefix}-f", "city": "rayong"}, "geometry": None}]})
    )  # fmt: skip
    done = nakhon("sensors", "import", "--dry-run", str(dry))
    assert done.returncode == 0, done.stderr
    assert "would import 1 (1 new" in done.stdout
    assert f"{prefix}-f" not in [r[0] for r in rows(conn, prefix)]

    nowhere = tmp_path / "nowhere.csv"
    nowhere.write_text(f"id,city\n{prefix}-g,rayong\n{prefix}-h,{prefix}_nowhere\n")
    done = nakhon("sensors", "import", str(nowhere))
    assert done.returncode == 1
    assert done.stderr == (
        f"rejected: line 3: city '{prefix}_nowhere' is not registered;"
        " add it with nakhon cities add\n"
    )
    assert done.stdout.strip() == (
        "nowhere.csv: 2 rows, imported 1 (1 new, 0 updated, 0 unchanged), 1 rejected"
    )
    assert f"{prefix}-h" not in [r[0] for r in rows(conn, prefix)]

    no_id = tmp_path / "no_id.csv"
    no_id.write_text("name,city\nx,y\n")
    for bad in (no_id, tmp_path / "missing.csv", tmp_path / "registry.xlsx"):
        done = nakhon("sensors", "import", str(bad))
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ")


def test_cli_list(prefix: str, tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(registry_csv(prefix))
    assert nakhon("sensors", "import", str(path)).returncode == 0
    done = nakhon("sensors", "list", "--city", prefix)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "sensor_id", "city", "kind", "name", "lat", "lon", "source", "last_seen",
    ]  # fmt: skip
    assert lines[2].split() == [f"{prefix}-c", prefix, "traffic", "Nimman", "registry"]
    assert lines[-1] == "(1 sensors)"
