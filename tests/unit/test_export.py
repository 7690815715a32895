"""The open-data export's pure parts: times, buckets, source choice, CSV and the Data Package."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from nakhon.storage.export import (
    BUCKET_FIELDS,
    RAW_FIELDS,
    SENSOR_FIELDS,
    CsvEncoder,
    ExportRequest,
    build_query,
    data_package,
    format_bucket,
    format_time,
    package_name,
    parse_bucket,
    sensors_csv,
)

START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 11, 2, tzinfo=UTC)


def test_times_are_iso_8601_utc_with_z() -> None:
    assert format_time(datetime(2026, 11, 28, 10, 0, tzinfo=UTC)) == "2026-11-28T10:00:00Z"
    bangkok = timezone(timedelta(hours=7))
    assert format_time(datetime(2026, 11, 28, 17, 0, 0, 1500, tzinfo=bangkok)) == (
        "2026-11-28T10:00:00.001500Z"
    )
    assert datetime.fromisoformat(format_time(START)) == START


def test_buckets() -> None:
    assert parse_bucket("1h") == timedelta(hours=1)
    assert parse_bucket("15m") == timedelta(minutes=15)
    assert parse_bucket("2w") == timedelta(weeks=2)
    for bad in ("", "0h", "1y", "h", "-1h", "1.5h"):
        with pytest.raises(ValueError, match="expected a number and a unit"):
            parse_bucket(bad)


@pytest.mark.parametrize(
    ("bucket", "start", "source"),
    [
        (None, START, "readings"),
        (timedelta(hours=1), START, "readings_1h"),
        (timedelta(days=1), START, "readings_1h"),
        (timedelta(minutes=15), START, "readings_1m"),
        (timedelta(hours=1), START + timedelta(minutes=30), "readings_1m"),
        (timedelta(hours=1), START + timedelta(seconds=30), "readings"),
        (timedelta(seconds=30), START, "readings"),
    ],
)
def test_source_follows_the_rollup_grid(
    bucket: timedelta | None, start: datetime, source: str
) -> None:
    req = ExportRequest("chiang_mai", ("pm2_5",), start, END, bucket)
    assert req.source == source
    query, params = build_query(req)
    assert params["metrics"] == ["pm2_5"] and params["city"] == "chiang_mai"
    assert source in query.as_string(None)
    assert req.fields == (RAW_FIELDS if bucket is None else BUCKET_FIELDS)


def test_csv_rows_carry_exact_values_and_units() -> None:
    encoder = CsvEncoder(RAW_FIELDS)
    t = datetime(2026, 11, 28, 3, 0, 0, 5, tzinfo=UTC)
    text = encoder.header() + encoder.rows(
        [
            (t, "chiang_mai", "cm-1", "pm2_5", 0.1 + 0.2),
            (t, "chiang_mai", "cm-1", "temperature", 31.0),
            (t, "chiang_mai", "cm-1", "x_odd", -1e-300),
        ]
    )
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["time", "city", "sensor_id", "metric", "value", "unit"]
    assert rows[1] == ["2026-11-28T03:00:00.000005Z", "chiang_mai", "cm-1", "pm2_5",
                       "0.30000000000000004", "µg/m³"]  # fmt: skip
    assert rows[2][4:] == ["31.0", "°C"]
    assert float(rows[3][4]) == -1e-300 and rows[3][5] == ""


def test_sensors_csv_quotes_names_and_leaves_unknowns_empty() -> None:
    text = sensors_csv([("cm-1", "chiang_mai", "air_quality", 'Tha Phae, "Gate"', 18.78, 98.99),
                        ("cm-2", "chiang_mai", None, None, None, None)])  # fmt: skip
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == [f.name for f in SENSOR_FIELDS]
    assert rows[1][3] == 'Tha Phae, "Gate"'
    assert rows[2] == ["cm-2", "chiang_mai", "", "", "", ""]


def test_data_package_describes_both_resources() -> None:
    req = ExportRequest("chiang_mai", ("pm2_5", "temperature"), START, END, timedelta(hours=1))
    package = data_package(
        req, path="cm.csv", sensors_path="sensors.csv", rows=7, created=END, licence="CC-BY-4.0"
    )
    assert (
        package["name"]
        == package_name(req)
        == "nakhon-chiang_mai-pm2_5_temperature-20261101-20261102"
    )
    assert package["profile"] == "tabular-data-package"
    assert package["licenses"] == [
        {
            "name": "CC-BY-4.0",
            "title": "Creative Commons Attribution 4.0",
            "path": "https://creativecommons.org/licenses/by/4.0/",
        }
    ]
    assert package["temporal"] == {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"}
    assert "1h bucket" in str(package["title"]) and "readings_1h" in str(package["description"])
    resources: Any = package["resources"]
    readings, sensors = resources
    assert readings["path"] == "cm.csv" and readings["rows"] == 7
    fields = readings["schema"]["fields"]
    assert [f["name"] for f in fields] == [f.name for f in BUCKET_FIELDS]
    assert fields[0]["type"] == "datetime" and fields[0]["format"] == "any"
    assert fields[4]["units"] == {"pm2_5": "µg/m³", "temperature": "°C"}
    assert readings["schema"]["primaryKey"] == ["bucket_start", "sensor_id", "metric"]
    assert sensors["path"] == "sensors.csv" and sensors["schema"]["primaryKey"] == ["sensor_id"]
    unknown = data_package(req, path="a.csv", sensors_path="s.csv", licence="Thai-OGL")
    assert unknown["licenses"] == [{"name": "Thai-OGL", "title": "Thai-OGL"}]


def test_a_bucket_width_formats_as_parse_bucket_reads_it() -> None:
    for text in ("2w", "1d", "1h", "5m", "30s", "90s"):
        assert parse_bucket(format_bucket(parse_bucket(text))) == parse_bucket(text)
    assert format_bucket(parse_bucket("60m")) == "1h"
