"""Parsing and validation of sensor registry files (CSV, GeoJSON): pure, no database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nakhon.storage.sensor_registry import (
    RegistryFileError,
    SensorRecord,
    format_of,
    load_registry,
    parse_csv,
    parse_geojson,
)

GOOD_CSV = """\
id,city,kind,name,lat,lon,installed,metadata
cm-aq-001,Chiang_Mai,air_quality,Tha Phae Gate,18.7877,98.9937,2024-01-15,\
"{""vendor"": ""Acme"", ""channels"": 2}"
CM-AQ-002,chiang_mai, air_quality ,,18.79,98.98,,
bkk-noise-7,bangkok,noise,Silom,,,,
"""


def errors_of(text: str) -> list[str]:
    return [str(e) for e in parse_csv(text).errors]


def test_csv_rows_become_records_with_metadata_from_extra_columns() -> None:
    result = parse_csv(GOOD_CSV)
    assert result.errors == []
    assert (result.rows, result.rejected) == (3, 0)
    assert result.records == [
        SensorRecord(
            sensor_id="cm-aq-001",
            city="chiang_mai",
            kind="air_quality",
            name="Tha Phae Gate",
            lat=18.7877,
            lon=98.9937,
            metadata={"installed": "2024-01-15", "vendor": "Acme", "channels": 2},
        ),
        SensorRecord(
            sensor_id="cm-aq-002", city="chiang_mai", kind="air_quality", lat=18.79, lon=98.98
        ),
        SensorRecord(sensor_id="bkk-noise-7", city="bangkok", kind="noise", name="Silom"),
    ]


def test_csv_header_aliases_case_and_order() -> None:
    text = "Longitude,LATITUDE,City,Sensor_ID\n100.5,13.75,bangkok,x1\n"
    (record,) = parse_csv(text).records
    assert (record.sensor_id, record.city, record.lat, record.lon) == (
        "x1",
        "bangkok",
        13.75,
        100.5,
    )


def test_csv_with_bom_crlf_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "registry.CSV"
    path.write_bytes(b"\xef\xbb\xbfid,city\r\na1,rayong\r\n\r\na2,rayong\r\n")
    result = load_registry(path)
    assert [r.sensor_id for r in result.records] == ["a1", "a2"]
    assert result.rows == 2


def test_each_bad_row_names_its_line_and_field_and_good_rows_stay() -> None:
    text = """\
id,city,kind,name,lat,lon
ok-1,phuket,air,,7.88,98.39
Bad Id!,phuket,air,,7.88,98.39
ok-2,phuket,air,,95,98.39
ok-3,phuket,air,,7.88,east
ok-4,Phuket City,air,,7.88,98.39
ok-5,phuket,air,,7.88,
ok-6,phuket,air,,nan,98.39
ok-1,phuket,air,,7.88,98.39
ok-7,phuket
,phuket,air,,7.88,98.39
ok-8,phuket,air,"a ""quoted""
multi-line name",7.88,-181
ok-9,phuket,air,,7.88,98.39
"""
    result = parse_csv(text)
    assert [r.sensor_id for r in result.records] == ["ok-1", "ok-9"]
    assert (result.rows, result.rejected) == (12, 10)
    assert [str(e) for e in result.errors] == [
        "line 3: sensor_id: must be 1–64 characters of a-z, 0-9, '_' or '-' (got 'Bad Id!')",
        "line 4: lat: Input should be less than or equal to 90 (got '95')",
        "line 5: lon: Input should be a valid number, unable to parse string as a number"
        " (got 'east')",
        "line 6: city: must be 1–64 characters of a-z, 0-9, '_' or '-' (got 'Phuket City')",
        "line 7: lat and lon must be given together (or both left empty)",
        "line 8: lat: Input should be a finite number (got 'nan')",
        "line 9: sensor_id: 'ok-1' is already on line 2",
        "line 10: has 2 fields, the header has 6",
        "line 11: sensor_id: must be 1–64 characters of a-z, 0-9, '_' or '-' (got '')",
        # A quoted field over two lines: the row is named by the line it starts on.
        "line 12: lon: Input should be greater than or equal to -180 (got '-181')",
    ]


def test_a_row_with_several_faults_reports_each() -> None:
    assert errors_of("id,city,lat,lon\nx,y z,-91,181\n") == [
        "line 2: city: must be 1–64 characters of a-z, 0-9, '_' or '-' (got 'y z')",
        "line 2: lat: Input should be greater than or equal to -90 (got '-91')",
        "line 2: lon: Input should be less than or equal to 180 (got '181')",
    ]


def test_sensor_id_longer_than_64_is_rejected() -> None:
    assert parse_csv(f"id,city\n{'a' * 64},x\n").errors == []
    assert errors_of(f"id,city\n{'a' * 65},x\n")[0].startswith("line 2: sensor_id: must be")


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("{not json", "line 2: metadata: not valid JSON (Expecting property name"),
        ("[1, 2]", "line 2: metadata: must be a JSON object (got list)"),
        ('{"owner": "x"}', "line 2: metadata: key 'owner' given twice"),
    ],
)
def test_bad_metadata_cells(cell: str, message: str) -> None:
    text = f'id,city,owner,metadata\nm1,lampang,city hall,"{cell.replace(chr(34), chr(34) * 2)}"\n'
    (error,) = errors_of(text)
    assert error.startswith(message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("name,city\nx,y\n", "line 1: the header has no id (or sensor_id) column"),
        ("id,name\nx,y\n", "line 1: the header has no city column"),
        ("id,sensor_id,city\n", "line 1: columns 'id' and 'sensor_id' both give sensor_id"),
        ("id,city,\n", "line 1: a column has no name"),
        ("id,city,lat,latitude\n", "line 1: columns 'lat' and 'latitude' both give lat"),
    ],
)
def test_a_csv_header_that_cannot_work_rejects_the_file(text: str, message: str) -> None:
    with pytest.raises(
        RegistryFileError, match="^" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        parse_csv(text)


def feature(properties: object, geometry: object = None, **extra: object) -> dict[str, object]:
    return {"type": "Feature", "properties": properties, "geometry": geometry, **extra}


def point(lon: object, lat: object, *more: object) -> dict[str, object]:
    return {"type": "Point", "coordinates": [lon, lat, *more]}


def collection(*features: object) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features)})


def test_geojson_points_become_records() -> None:
    text = collection(
        feature(
            {"id": "KK-AQ-1", "city": "khon_kaen", "kind": "air_quality",
             "name": "Bueng Kaen Nakhon", "owner": "KKU", "metadata": {"vendor": "Acme"}},
            point(102.824, 16.432),
        ),
        feature({"sensor_id": "kk-aq-2", "city": "khon_kaen"}, point(102.8, 16.4, 165.5)),
        feature({"city": "khon_kaen"}, None, id=17),
    )  # fmt: skip
    result = parse_geojson(text)
    assert result.errors == []
    assert result.records == [
        SensorRecord(
            sensor_id="kk-aq-1",
            city="khon_kaen",
            kind="air_quality",
            name="Bueng Kaen Nakhon",
            lat=16.432,
            lon=102.824,
            metadata={"owner": "KKU", "vendor": "Acme"},
        ),
        SensorRecord(
            sensor_id="kk-aq-2", city="khon_kaen", lat=16.4, lon=102.8, metadata={"altitude": 165.5}
        ),
        SensorRecord(sensor_id="17", city="khon_kaen"),
    ]


def test_a_single_feature_is_a_registry_of_one() -> None:
    text = json.dumps(feature({"id": "one", "city": "rayong"}, point(101.28, 12.68)))
    assert [r.sensor_id for r in parse_geojson(text).records] == ["one"]


def test_each_bad_feature_names_its_index_and_field() -> None:
    text = collection(
        feature({"id": "ok-1", "city": "rayong"}, point(101.28, 12.68)),
        feature({"id": "line-1", "city": "rayong"}, {"type": "LineString", "coordinates": []}),
        feature({"id": "swapped", "city": "rayong"}, point(12.68, 101.28)),
        feature({"id": "short", "city": "rayong"}, {"type": "Point", "coordinates": [101.28]}),
        feature({"id": "text", "city": "rayong"}, point("101.28", 12.68)),
        feature({"city": "rayong"}, point(101.28, 12.68)),
        feature({"id": "kind", "city": "rayong", "kind": 5}, None),
        feature({"id": "ok-1", "city": "rayong"}, None),
        "not a feature",
        feature(["a", "list"], None, id="props"),
        feature({"id": "ok-2", "city": "rayong"}, point(101.28, 12.68)),
    )
    result = parse_geojson(text)
    assert [r.sensor_id for r in result.records] == ["ok-1", "ok-2"]
    assert (result.rows, result.rejected) == (11, 9)
    assert [str(e) for e in result.errors] == [
        "features[1] (id 'line-1'): geometry: must be a Point (got LineString)",
        "features[2] (id 'swapped'): lat: Input should be less than or equal to 90 (got 101.28)",
        "features[3] (id 'short'): coordinates: must be [lon, lat] or [lon, lat, altitude] numbers",
        "features[4] (id 'text'): coordinates: must be [lon, lat] or [lon, lat, altitude] numbers",
        "features[5]: sensor_id: Field required",
        "features[6] (id 'kind'): kind: Input should be a valid string (got 5)",
        "features[7] (id 'ok-1'): sensor_id: 'ok-1' is already on features[0] (id 'ok-1')",
        "features[8]: is not a GeoJSON Feature",
        "features[9] (id 'props'): properties: must be an object",
        "features[9] (id 'props'): city: Field required",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON: Expecting property name enclosed in double quotes at line 1"),
        ("[]", "a GeoJSON registry is a FeatureCollection"),
        ('{"type": "Point", "coordinates": [1, 2]}', "a GeoJSON registry is a FeatureCollection"),
        ('{"type": "FeatureCollection"}', "the FeatureCollection has no features array"),
    ],
)
def test_geojson_that_is_no_registry_rejects_the_file(text: str, message: str) -> None:
    with pytest.raises(RegistryFileError, match="^" + message):
        parse_geojson(text)


def test_format_by_extension() -> None:
    assert format_of(Path("a.csv")) == "csv"
    assert format_of(Path("b.GeoJSON")) == "geojson"
    assert format_of(Path("c.json")) == "geojson"
    with pytest.raises(RegistryFileError, match="use --format"):
        format_of(Path("d.xlsx"))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(RegistryFileError, match="cannot read"):
        load_registry(tmp_path / "missing.csv")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(b"id,city,name\nx,y,Caf\xe9\n")
    with pytest.raises(RegistryFileError, match="is not UTF-8 text"):
        load_registry(latin1)
    geo = tmp_path / "registry.txt"
    geo.write_text(collection(feature({"id": "g", "city": "c"}, point(1, 2))))
    assert [r.sensor_id for r in load_registry(geo, "geojson").records] == ["g"]
