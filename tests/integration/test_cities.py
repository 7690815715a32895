"""``nakhon cities add|list|import`` as subprocesses against the real TimescaleDB."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from nakhon.storage.writer import ReadingWriter
from tests.integration.conftest import Stack
from tests.integration.pipeline_harness import run_nakhon

Row = tuple[object, ...]


@pytest.fixture
def prefix(stack: Stack) -> Iterator[str]:
    """A city id prefix of this test's own; its cities are deleted after."""
    tag = f"t_{uuid.uuid4().hex[:12]}"
    yield tag
    with psycopg.connect(stack.dsn) as conn:
        conn.execute("DELETE FROM cities WHERE city_id LIKE %s", (tag + "%",))


def nakhon(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAKHON_")}
    env["NAKHON_DB_DSN"] = stack.dsn
    return run_nakhon("cities", *args, env=env, timeout_s=60)


def rows(stack: Stack, prefix: str) -> list[Row]:
    with psycopg.connect(stack.dsn) as conn:
        return conn.execute(
            "SELECT city_id, name_en, name_th, province, lat, lon, note, xmin::text"
            " FROM cities WHERE city_id LIKE %s ORDER BY city_id",
            (prefix + "%",),
        ).fetchall()


def test_add_again_unchanged_then_updated_and_listed(stack: Stack, prefix: str) -> None:
    city = f"{prefix}_udon"
    add = ("add", city, "--name-en", "Udon Thani", "--name-th", "อุดรธานี", "--province")
    done = nakhon(stack, *add, "Udon Thani", "--lat", "17.415", "--lon", "102.787")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"created city {city}\n", "")
    [created] = rows(stack, prefix)
    assert created[:7] == (city, "Udon Thani", "อุดรธานี", "Udon Thani", 17.415, 102.787, None)

    done = nakhon(stack, *add, "Udon Thani", "--lat", "17.415", "--lon", "102.787")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"unchanged: city {city} is already registered with these values\n"
    assert rows(stack, prefix) == [created]  # not even rewritten (same xmin)

    done = nakhon(stack, *add, "Udon Thani Province", "--lat", "17.4", "--lon", "102.787")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"updated city {city}:",
        "  province: 'Udon Thani' -> 'Udon Thani Province'",
        "  lat: 17.415 -> 17.4",
    ]
    assert rows(stack, prefix)[0][3:5] == ("Udon Thani Province", 17.4)

    listed = nakhon(stack, "list")
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith(city))
    assert line.split() == [
        city, "Udon", "Thani", "อุดรธานี", "Udon", "Thani", "Province", "17.4", "102.787",
    ]  # fmt: skip
    assert "bangkok" in listed.stdout  # the seeded cities are there too

    as_json = nakhon(stack, "list", "--json")
    assert as_json.returncode == 0, as_json.stderr
    [mine] = [c for c in json.loads(as_json.stdout) if c["id"] == city]
    assert {k: v for k, v in mine.items() if k not in ("created_at", "updated_at")} == {
        "id": city,
        "name_en": "Udon Thani",
        "name_th": "อุดรธานี",
        "province": "Udon Thani Province",
        "lat": 17.4,
        "lon": 102.787,
        "note": None,
    }


def test_import_csv_twice_the_second_time_all_unchanged(
    stack: Stack, prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "cities.csv"
    path.write_text(
        "id,name_en,name_th,province,lat,lon,note\n"
        f"{prefix}_a,Nong Khai,หนองคาย,Nong Khai,17.878,102.742,lat/lon: unverified\n"
        f"{prefix}_b,Trat,ตราด,Trat,,,\n",
        encoding="utf-8",
    )
    first = nakhon(stack, "import", str(path))
    assert (first.returncode, first.stderr) == (0, "")
    assert first.stdout.splitlines() == [
        f"line 2: {prefix}_a: created",
        f"line 3: {prefix}_b: created",
        "cities.csv: 2 rows, 2 created, 0 updated, 0 unchanged, 0 rejected",
    ]
    stored = rows(stack, prefix)
    assert [r[:7] for r in stored] == [
        (f"{prefix}_a", "Nong Khai", "หนองคาย", "Nong Khai", 17.878, 102.742,
         "lat/lon: unverified"),
        (f"{prefix}_b", "Trat", "ตราด", "Trat", None, None, None),
    ]  # fmt: skip

    second = nakhon(stack, "import", str(path))
    assert (second.returncode, second.stderr) == (0, "")
    assert second.stdout.splitlines()[-1] == (
        "cities.csv: 2 rows, 0 created, 0 updated, 2 unchanged, 0 rejected"
    )
    assert rows(stack, prefix) == stored  # nothing rewritten

    # What list --json prints imports back unchanged.
    exported = json.loads(nakhon(stack, "list", "--json").stdout)
    mine = [c for c in exported if c["id"].startswith(prefix)]
    back = tmp_path / "cities.json"
    back.write_text(json.dumps(mine, ensure_ascii=False), encoding="utf-8")
    again = nakhon(stack, "import", str(back))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == (
        "cities.json: 2 rows, 0 created, 0 updated, 2 unchanged, 0 rejected"
    )

    # A changed row is updated, a bad one rejected, the rest still imported.
    path.write_text(
        f"id,name_en,name_th,province\n{prefix}_b,Trat,ตราด,Trat Province\n{prefix}-c,Bad,ก,P\n",
        encoding="utf-8",
    )
    third = nakhon(stack, "import", str(path))
    assert third.returncode == 1
    assert third.stderr.startswith("rejected: line 3: city_id: must be 1–64 characters")
    assert third.stdout.splitlines() == [
        f"line 2: {prefix}_b: updated (province: 'Trat' -> 'Trat Province')",
        "cities.csv: 2 rows, 0 created, 1 updated, 0 unchanged, 1 rejected",
    ]


def test_invalid_input_is_refused_with_exit_code_2(
    stack: Stack, prefix: str, tmp_path: Path
) -> None:
    done = nakhon(stack, "add", "Khon-Kaen", "--name-en", "K", "--name-th", "ข", "--province", "K")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "error: ID: must be 1–64 characters of a-z, 0-9 or '_' (no '-') (got 'Khon-Kaen')\n"
    )

    done = nakhon(stack, "add", f"{prefix}_x", "--name-en", "X", "--name-th", "ก",
                  "--province", "P", "--lat", "13.7")  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == "error: lat and lon must be given together (or both left out)\n"

    done = nakhon(stack, "add", f"{prefix}_x", "--name-en", " ", "--name-th", "ก",
                  "--province", "P")  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("error: --name-en: String should have at least 1 character")
    assert rows(stack, prefix) == []

    unknown = tmp_path / "cities.csv"
    unknown.write_text("id,name_en,name_th,province,population\n")
    for bad in (unknown, tmp_path / "missing.csv", tmp_path / "cities.xlsx"):
        done = nakhon(stack, "import", str(bad))
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ")


async def test_the_processor_snapshot_holds_the_registered_cities(
    stack: Stack, prefix: str
) -> None:
    assert nakhon(stack, "add", prefix, "--name-en", "T", "--name-th", "ท",
                  "--province", "P").returncode == 0  # fmt: skip
    async with ReadingWriter(stack.dsn) as writer:
        cities = await writer.registered_cities()
    assert {"bangkok", "chonburi", "nakhon_si_thammarat", prefix} <= cities
    assert "lorawan" not in cities and "unknown" not in cities
