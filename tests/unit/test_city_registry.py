"""The city registry's pure parts: validation, CSV/JSON parsing, the seeded cities."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest
from pydantic import ValidationError

from nakhon.simulator.fleet import CITIES as SIMULATED_CITIES
from nakhon.storage.cities_command import city_table, display_width
from nakhon.storage.city_registry import (
    Change,
    CityFileError,
    CityRecord,
    Outcome,
    parse_csv,
    parse_json,
)
from nakhon.storage.sensor_registry import SensorRecord
from nakhon.storage.sensor_registry import parse_csv as parse_sensor_csv

HEADER = "id,name_en,name_th,province,lat,lon\n"


def errors_of(text: str) -> list[str]:
    return [str(e) for e in parse_csv(text).errors]


def test_a_valid_csv_row() -> None:
    parsed = parse_csv(HEADER + " Udon_Thani , Udon Thani ,อุดรธานี,Udon Thani,17.415,102.787\n")
    assert parsed.errors == []
    assert parsed.records == [
        CityRecord(
            city_id="udon_thani",
            name_en="Udon Thani",
            name_th="อุดรธานี",
            province="Udon Thani",
            lat=17.415,
            lon=102.787,
        )
    ]
    assert parsed.locations == {"udon_thani": "line 2"}


def test_bad_rows_are_reported_by_line_and_field_and_the_good_ones_kept() -> None:
    text = (
        HEADER
        + "khon-kaen,Khon Kaen,ขอนแก่น,Khon Kaen,,\n"
        + "ok_1,A,ก,P,,\n"
        + "x,,ก,P,,\n"
        + "y,Y,ก,P,91,100\n"
        + "z,Z,ก,P,13.7,\n"
        + "ok_1,B,ข,P,,\n"
        + "too,few\n"
    )
    parsed = parse_csv(text)
    assert [r.city_id for r in parsed.records] == ["ok_1"]
    assert (parsed.rows, parsed.rejected) == (7, 6)
    assert [str(e) for e in parsed.errors] == [
        "line 2: city_id: must be 1–64 characters of a-z, 0-9 or '_' (no '-') (got 'khon-kaen')",
        "line 4: name_en: String should have at least 1 character (got '')",
        "line 5: lat: Input should be less than or equal to 90 (got '91')",
        "line 6: lat and lon must be given together (or both left out)",
        "line 7: city_id: 'ok_1' is already on line 3",
        "line 8: has 2 fields, the header has 6",
    ]


def test_ids_are_1_to_64_of_a_to_z_digits_and_underscore() -> None:
    assert CityRecord(city_id="A" * 64, name_en="a", name_th="ก", province="p").city_id == "a" * 64
    for bad in ("", "a" * 65, "chiang mai", "chiang-mai", "เชียงใหม่", "a/b", "+"):
        with pytest.raises(ValidationError, match="must be 1–64 characters"):
            CityRecord(city_id=bad, name_en="a", name_th="ก", province="p")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty (a CSV city list starts with a header row)"),
        ("id,name_en,name_th\n", "line 1: the header has no province column"),
        ("name_en,name_th,province\n", "line 1: the header has no id column"),
        (HEADER.strip() + ",population\n", "line 1: unknown column 'population'"),
        ("id,city_id,name_en,name_th,province\n", "line 1: two columns give city_id"),
    ],
)
def test_a_file_that_is_not_a_city_list(text: str, message: str) -> None:
    with pytest.raises(CityFileError, match=re.escape(message)):
        parse_csv(text)


def test_json_reads_what_list_json_prints() -> None:
    printed = [
        {
            "id": "rayong",
            "name_en": "Rayong",
            "name_th": "ระยอง",
            "province": "Rayong",
            "lat": 12.681,
            "lon": 101.281,
            "note": "lat/lon: approximate",
            "created_at": "2026-11-28T06:51:04+00:00",
            "updated_at": "2026-11-28T06:51:04+00:00",
        },
        {"city_id": "trat", "name_en": "Trat", "name_th": "ตราด", "province": "Trat"},
        {"id": "x", "name_en": "X", "name_th": "ก", "province": "P", "population": 5},
        "not an object",
        {"id": 7, "name_en": "X", "name_th": "ก", "province": "P"},
    ]
    parsed = parse_json(json.dumps(printed))
    assert [(r.city_id, r.note, r.lat) for r in parsed.records] == [
        ("rayong", "lat/lon: approximate", 12.681),
        ("trat", None, None),
    ]
    assert [str(e) for e in parsed.errors] == [
        "[2]: population: unknown or repeated key"
        " (keys: id, name_en, name_th, province, lat, lon, note)",
        "[3]: is not an object",
        "[4]: city_id: Input should be a valid string (got 7)",
    ]
    with pytest.raises(CityFileError, match="a JSON city list is a list of objects"):
        parse_json('{"id": "x"}')
    with pytest.raises(CityFileError, match="not valid JSON"):
        parse_json("[{")


def test_outcomes_say_what_changed() -> None:
    changes = (Change("name_en", "Chonburi", "Chon Buri"), Change("lat", 13.3, None))
    assert str(Outcome("chonburi", "updated", changes)) == (
        "chonburi: updated (name_en: 'Chonburi' -> 'Chon Buri'; lat: 13.3 -> (none))"
    )
    assert str(Outcome("chonburi", "unchanged")) == "chonburi: unchanged"


def seeded_city_ids() -> set[str]:
    migration = resources.files("nakhon.storage").joinpath("migrations/0003_cities.sql")
    return set(re.findall(r"^\s+\('([a-z0-9_]+)', '", migration.read_text("utf-8"), re.M))


def test_the_migration_registers_the_domain_cities_and_every_simulated_one() -> None:
    seeded = seeded_city_ids()
    domain = {
        "bangkok", "chonburi", "phuket", "khon_kaen", "chiang_mai", "rayong", "lampang",
        "samut_prakan", "chachoengsao", "nakhon_si_thammarat",
    }  # fmt: skip
    assert domain <= seeded
    assert {city.slug for city in SIMULATED_CITIES} <= seeded


def test_thai_marks_take_no_column_in_the_table() -> None:
    assert display_width("เชียงใหม่") == 7  # 9 code points, 2 of them combining marks
    assert display_width("Chiang Mai") == 10
    assert city_table([]).splitlines()[0].split() == [
        "id", "name_en", "name_th", "province", "lat", "lon", "note",
    ]  # fmt: skip


def test_a_refused_sensor_becomes_a_row_error_naming_its_city() -> None:
    parsed = parse_sensor_csv("id,city\na1,rayong\na2,atlantis\na3,rayong\n")
    refused = [r for r in parsed.records if r.city == "atlantis"]
    errors = parsed.refuse(refused)
    assert [str(e) for e in errors] == [
        "line 3: city 'atlantis' is not registered; add it with nakhon cities add"
    ]
    assert [r.sensor_id for r in parsed.records] == ["a1", "a3"]
    assert (parsed.rows, parsed.rejected) == (3, 1)
    assert parsed.refuse([SensorRecord(sensor_id="zz", city="q")])[0].where == "'zz'"
