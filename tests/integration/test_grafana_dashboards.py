"""The Grafana dashboards of deploy/grafana: well-formed, and every query works.

- Every dashboard is a dashboard model as Grafana's file provisioning loads it,
  and refers only to the provisioned data sources.
- Every SQL query (panels and template variables), with Grafana's macros and
  the template variables expanded the way Grafana does, runs against the real
  TimescaleDB holding test data of a city of its own, and returns rows; the
  AQI a panel computes in SQL is the one ``nakhon.domain.aqi`` computes.
- Every metric a Prometheus panel or alert rule names is exposed by the
  services' metrics objects (rendered from a fresh registry, as /metrics does).

The test data is dated a few days ahead of now: rows newer than the rollups'
refresh threshold are aggregated on read by ``readings_1m`` / ``readings_1h``
on both TimescaleDB editions, so the test needs no refresh of its own and does
not race ``nakhon maintain``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from nakhon.api.metrics import ApiMetrics
from nakhon.domain.aqi import Concentrations, thai_aqi
from nakhon.domain.catalogue import METRICS
from nakhon.ingest.metrics import GatewayMetrics
from nakhon.processors.metrics import ProcessorMetrics
from tests.integration.conftest import REPO, Stack

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PROM_RULES = sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml"))
PG_UID = "nakhon-timescaledb"
PROM_UID = "nakhon-prometheus"
#: Series Prometheus makes itself rather than scraping them.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

Json = dict[str, Any]


def load(path: Path) -> Json:
    data: Json = json.loads(path.read_text(encoding="utf-8"))
    return data


def all_panels(dashboard: Json) -> Iterator[Json]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside a collapsed row


def targets(dashboard: Json, uid: str) -> Iterator[tuple[str, Json]]:
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel.get("datasource") or {}
            if source.get("uid") == uid:
                yield panel["title"], target


# --- the provisioning format ----------------------------------------------------------


def test_there_are_the_three_dashboards() -> None:
    titles = {load(p)["title"] for p in DASHBOARDS}
    assert titles == {
        "Nakhon / Pipeline health",
        "Nakhon / City environment",
        "Nakhon / Mobility",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_a_provisionable_model(path: Path) -> None:
    dashboard = load(path)
    assert "dashboard" not in dashboard, "file provisioning takes the bare model, not an API body"
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["time"]["from"].startswith("now-")
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    known = {PG_UID, PROM_UID}
    for panel in all_panels(dashboard):
        assert panel["type"] and panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in known, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in known
            assert target.get("rawSql") or target.get("expr"), panel["title"]
    for var in dashboard["templating"]["list"]:
        assert var["datasource"]["uid"] in known


def test_uids_are_unique_and_data_sources_are_provisioned() -> None:
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/nakhon.yml").read_text())
    by_uid = {d["uid"]: d for d in provisioned["datasources"]}
    assert by_uid[PROM_UID]["type"] == "prometheus"
    assert by_uid[PG_UID]["type"] == "grafana-postgresql-datasource"
    # $__timeGroup must become time_bucket(), as the expander below assumes.
    assert by_uid[PG_UID]["jsonData"]["timescaledb"] is True
    for path in DASHBOARDS:
        for panel in all_panels(load(path)):
            for target in panel.get("targets", []):
                assert target["datasource"]["type"] == by_uid[target["datasource"]["uid"]]["type"]


def test_dashboard_provider_reads_the_mounted_folder() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/nakhon.yml").read_text())
    (entry,) = provider["providers"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{entry['options']['path']}:ro" in mounts


def test_geomaps_read_coordinates_their_queries_return() -> None:
    for path in DASHBOARDS:
        for panel in all_panels(load(path)):
            if panel["type"] != "geomap":
                continue
            sql = panel["targets"][0]["rawSql"]
            for layer in panel["options"]["layers"]:
                location = layer["location"]
                assert f"AS {location['latitude']}" in sql
                assert f"AS {location['longitude']}" in sql
                colour = layer["config"]["style"]["color"]["field"]
                assert re.search(rf"\b{colour}\b", sql), panel["title"]


# --- Grafana's macros and variables ---------------------------------------------------


@dataclass
class Expander:
    """Expands a SQL panel query as Grafana's PostgreSQL data source does.

    Template variables are interpolated first (``$__interval`` included), then
    the data source's macros, with the TimescaleDB option on (time_bucket).
    Multi-value variables become a list of quoted literals; a variable whose
    value is ``None`` is "All" and becomes its custom ``allValue`` verbatim.
    """

    time_from: datetime
    time_to: datetime
    interval: str
    variables: Mapping[str, Sequence[str] | None]
    all_values: Mapping[str, str] = field(default_factory=dict)

    def __call__(self, sql: str) -> str:
        sql = sql.replace("$__interval_ms", str(_seconds(self.interval) * 1000))
        sql = sql.replace("$__interval", self.interval)
        for name in sorted(self.variables, key=len, reverse=True):
            value = self._variable(name)
            sql = sql.replace("${" + name + "}", value)
            sql = re.sub(rf"\${name}\b", _literal(value), sql)
        sql = self._macros(sql)
        leftover = re.search(r"\$\{?\w+", sql)
        assert leftover is None, f"unexpanded {leftover.group(0)} in {sql}"
        return sql

    def _variable(self, name: str) -> str:
        values = self.variables[name]
        if values is None:
            return self.all_values[name]
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)

    def _macros(self, sql: str) -> str:
        start, end = _iso(self.time_from), _iso(self.time_to)

        def group(m: re.Match[str], alias: bool) -> str:
            column, interval = (a.strip() for a in m.group(1).split(","))
            bucket = f"time_bucket('{_seconds(interval)}s', {column})"
            return f'{bucket} AS "time"' if alias else bucket

        sql = re.sub(r"\$__timeGroupAlias\(([^)]*)\)", lambda m: group(m, alias=True), sql)
        sql = re.sub(r"\$__timeGroup\(([^)]*)\)", lambda m: group(m, alias=False), sql)
        sql = re.sub(
            r"\$__timeFilter\(([^)]*)\)",
            lambda m: f"{m.group(1).strip()} BETWEEN '{start}' AND '{end}'",
            sql,
        )
        sql = sql.replace("$__timeFrom()", f"'{start}'").replace("$__timeTo()", f"'{end}'")
        return sql


def _literal(value: str) -> str:
    """``value`` as an ``re.sub`` replacement that inserts it verbatim."""
    return value.replace("\\", "\\\\")


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(interval: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", interval.strip())
    assert m, f"not a Grafana interval: {interval}"
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return max(1, int(int(m.group(1)) * unit))


def test_expander_matches_grafanas_expansion() -> None:
    t0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    expand = Expander(
        t0 - timedelta(hours=1),
        t0,
        "5m",
        {"city": ["a", "o'b"], "sensor": None},
        {"sensor": "'__all'"},
    )
    sql = expand(
        "SELECT $__timeGroupAlias(bucket, $__interval), 1 FROM t "
        "WHERE $__timeFilter(bucket) AND city IN ($city) AND s IN (${sensor}) "
        "AND b > $__timeFrom()"
    )
    assert sql == (
        "SELECT time_bucket('300s', bucket) AS \"time\", 1 FROM t "
        "WHERE bucket BETWEEN '2025-03-01T11:00:00Z' AND '2025-03-01T12:00:00Z' "
        "AND city IN ('a','o''b') AND s IN ('__all') AND b > '2025-03-01T11:00:00Z'"
    )


# --- the queries against TimescaleDB --------------------------------------------------

#: PM2.5 of each test station, µg/m³: one per AQI row, the 201+ row included.
STATION_PM25 = {"air-1": 12.3, "air-2": 42.0, "air-3": 80.0}
STEP = timedelta(minutes=5)


@dataclass(frozen=True)
class CityData:
    city: str
    time_from: datetime
    time_to: datetime
    sensors: tuple[str, ...]

    def expander(self, sensors: Sequence[str] | None = None, interval: str = "5m") -> Expander:
        return Expander(
            self.time_from,
            self.time_to,
            interval,
            {"city": [self.city], "sensor": sensors},
            {"sensor": "'__all'"},
        )


def sql_metrics() -> set[str]:
    """Every canonical metric a dashboard's SQL names."""
    found: set[str] = set()
    for path in DASHBOARDS:
        for _, target in targets(load(path), PG_UID):
            sql = target["rawSql"]
            found.update(re.findall(r"metric = '(\w+)'", sql))
            for group in re.findall(r"metric IN \(([^)]*)\)", sql):
                found.update(re.findall(r"'(\w+)'", group))
    return found


@pytest.fixture(scope="module")
def city_data(stack: Stack) -> Iterator[CityData]:
    city = f"gtest_{uuid.uuid4().hex[:10]}"
    # A whole hour a few days ahead: see the module's docstring.
    t0 = (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    start = t0 - timedelta(hours=30)
    metrics = sql_metrics()
    assert "pm2_5" in metrics
    sensors: dict[str, str] = {f"{city}-{name}": "air" for name in STATION_PM25}
    rows: list[tuple[datetime, str, str, float, str]] = []
    for metric in sorted(metrics - {"pm2_5"}):
        for n in (1, 2):
            sensor = f"{city}-{metric.replace('_', '')}-{n}"
            sensors[sensor] = metric
            spec = METRICS[metric]
            value = spec.low + (spec.high - spec.low) * (0.3 + 0.1 * n)
            t = start
            while t <= t0:
                rows.append((t, sensor, metric, value, city))
                t += STEP
    for name, pm in STATION_PM25.items():
        t = start
        while t <= t0:
            rows.append((t, f"{city}-{name}", "pm2_5", pm, city))
            t += STEP
    vehicles = [f"{city}-bus-{n}" for n in (1, 2, 3)]
    positions: list[tuple[datetime, str, float, float, float, float, str]] = []
    for n, vehicle in enumerate(vehicles):
        t = t0 - timedelta(hours=6)
        while t <= t0:
            positions.append((t, vehicle, 16.43 + 0.001 * n, 102.82, 20.0 + n, 90.0, city))
            t += timedelta(minutes=1)
    with psycopg.connect(stack.dsn) as conn, conn.cursor() as cur:
        for i, (sensor, kind) in enumerate(sorted(sensors.items())):
            cur.execute(
                "INSERT INTO sensors (sensor_id, city, kind, name, lat, lon, first_seen,"
                " last_seen, source) VALUES (%s, %s, %s, %s, %s, %s, %s,"
                " now() - %s * interval '1 hour', 'registry')",
                (sensor, city, kind, f"Station {i}", 16.4 + 0.01 * i, 102.8, start, i % 2),
            )
        for vehicle in vehicles:
            cur.execute(
                "INSERT INTO sensors (sensor_id, city, kind, first_seen, last_seen)"
                " VALUES (%s, %s, 'vehicle', %s, now())",
                (vehicle, city, start),
            )
        with cur.copy("COPY readings (time, sensor_id, metric, value, city) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        with cur.copy(
            "COPY positions (time, vehicle_id, lat, lon, speed_kmh, heading, city) FROM STDIN"
        ) as cp:
            for pos in positions:
                cp.write_row(pos)
    try:
        yield CityData(city, t0 - timedelta(hours=6), t0, tuple(sorted(sensors)))
    finally:
        with psycopg.connect(stack.dsn) as conn:
            conn.execute("DELETE FROM readings WHERE city = %s", (city,))
            conn.execute("DELETE FROM positions WHERE city = %s", (city,))
            conn.execute("DELETE FROM sensors WHERE city = %s", (city,))


def sql_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel or variable, SQL) of every SQL query of every dashboard."""
    out: list[tuple[str, str, str]] = []
    for path in DASHBOARDS:
        dashboard = load(path)
        for title, target in targets(dashboard, PG_UID):
            out.append((path.name, f"{title} [{target['refId']}]", target["rawSql"]))
        for var in dashboard["templating"]["list"]:
            if var["datasource"]["uid"] == PG_UID:
                out.append((path.name, f"${var['name']}", var["query"]))
    return out


def run(dsn: str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SET statement_timeout = '10s'")
        cur.execute(sql.encode())
        names = [c.name for c in cur.description or ()]
        return names, cur.fetchall()


@pytest.mark.parametrize(
    ("dashboard", "panel", "sql"), sql_queries(), ids=[f"{d}:{p}" for d, p, _ in sql_queries()]
)
def test_sql_query_returns_rows(
    stack: Stack, city_data: CityData, dashboard: str, panel: str, sql: str
) -> None:
    names, rows = run(stack.reader_dsn, city_data.expander()(sql))
    assert rows, f"{dashboard} / {panel} returned no rows"
    if '"time"' in city_data.expander()(sql) or "AS time" in sql:
        assert "time" in names


def station_aqi_sql() -> str:
    for path in DASHBOARDS:
        for panel in all_panels(load(path)):
            if panel["type"] == "geomap" and "aqi" in panel["targets"][0]["rawSql"]:
                sql: str = panel["targets"][0]["rawSql"]
                return sql
    raise AssertionError("no geomap of stations by AQI")


def test_station_aqi_is_the_thai_pcd_index(stack: Stack, city_data: CityData) -> None:
    names, rows = run(stack.reader_dsn, city_data.expander()(station_aqi_sql()))
    by_sensor = {r[names.index("sensor_id")]: r for r in rows}
    for name, pm in STATION_PM25.items():
        row = by_sensor[f"{city_data.city}-{name}"]
        expected = thai_aqi(Concentrations(pm2_5_24h=pm))
        assert expected is not None
        assert row[names.index("aqi")] == expected.index, name
        assert float(row[names.index("pm2_5_24h")]) == pytest.approx(pm)


def test_station_aqi_sql_matches_python_on_every_band(stack: Stack) -> None:
    """The AQI CASE of the panel, on a grid of concentrations across every breakpoint."""
    sql = station_aqi_sql()
    start = sql.index("(CASE")
    depth = 0
    for end in range(start, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[end], 0)
        if depth == 0:
            break
    case = sql[start : end + 1].replace("pm.pm2_5_24h", "x")
    grid = [round(i * 0.05, 2) for i in range(0, 3001)] + [15.05, 25.05, 37.55, 75.05, 500.0]
    _, rows = run(
        stack.reader_dsn, f"SELECT x, {case}::int FROM unnest(ARRAY{grid}::float8[]) AS x"
    )
    for x, aqi in rows:
        expected = thai_aqi(Concentrations(pm2_5_24h=x))
        assert expected is not None
        assert aqi == expected.index, x


def test_sensor_variable_narrows_station_panels(stack: Stack, city_data: CityData) -> None:
    chosen = f"{city_data.city}-air-2"
    names, rows = run(stack.reader_dsn, city_data.expander([chosen])(station_aqi_sql()))
    assert [r[names.index("sensor_id")] for r in rows] == [chosen]


# --- Prometheus panels and rules against the services' metrics ---------------------------


def exposed_metric_names() -> set[str]:
    """Sample names the gateway, the processor and the API expose on /metrics."""
    registry = CollectorRegistry()
    owners: list[object] = [
        GatewayMetrics(registry),
        ProcessorMetrics(registry),
        ApiMetrics(registry),
    ]
    for owner in owners:
        for metric in vars(owner).values():
            if isinstance(metric, MetricWrapperBase) and metric._labelnames:
                # A labelled metric renders only once a child exists.
                metric.labels(*["x"] * len(metric._labelnames))
    text = generate_latest(registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def promql_metric_names(expr: str) -> set[str]:
    no_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"\b(nakhon_[a-z0-9_]+|up)\b", no_strings))


def prometheus_expressions() -> list[tuple[str, str]]:
    out = [
        (f"{path.name}: {title}", target["expr"])
        for path in DASHBOARDS
        for title, target in targets(load(path), PROM_UID)
    ]
    for path in PROM_RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out.append((f"{path.name}: {rule.get('alert') or rule['record']}", rule["expr"]))
    return out


def test_every_prometheus_metric_is_exposed() -> None:
    exposed = exposed_metric_names() | PROMETHEUS_OWN
    expressions = prometheus_expressions()
    assert len(expressions) > 20
    missing = {
        (where, name)
        for where, expr in expressions
        for name in promql_metric_names(expr)
        if name not in exposed
    }
    assert not missing


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.5, sum by (le) (rate(nakhon_x_seconds_bucket[5m]))) "
        '/ up{job="nakhon_not_a_metric"} + nakhon:recorded'
    )
    assert promql_metric_names(expr) == {"nakhon_x_seconds_bucket", "up"}
