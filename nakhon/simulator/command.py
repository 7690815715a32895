"""``nakhon simulate``: publish a simulated city fleet and watch it land.

Prints a live progress line (published / stored / rejected) and, at the end,
what landed: rows per city and metric, a sample SQL query with its output, and
where to look next. ``make demo`` runs it for a minute.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.reasoncodes import ReasonCode

from nakhon.cli import configure_logging
from nakhon.config import MissingDsnError, Settings, load_settings
from nakhon.domain.aqi import Concentrations, thai_aqi
from nakhon.identity import provision
from nakhon.identity.dynsec import DynsecAdmin, DynsecError
from nakhon.identity.provision import Credentials, ProvisionError
from nakhon.identity.roles import bridge_identity
from nakhon.local_stack import LOCAL_STACK
from nakhon.mqtt_connection import MqttEndpoint
from nakhon.simulator.fleet import SimSensor, build_fleet, faulty_payload, payload, utcnow

log = logging.getLogger("nakhon.simulate")

#: Readings one message of each kind carries (positions are counted apart).
READINGS_PER_MESSAGE = {"air": 4, "noise": 1, "traffic": 3, "bus": 0}

SAMPLE_SQL = """\
SELECT city,
       round(avg(value)::numeric, 1) AS pm2_5_avg,
       round(max(value)::numeric, 1) AS pm2_5_max,
       count(DISTINCT sensor_id)     AS stations
  FROM readings
 WHERE metric = 'pm2_5' AND sensor_id LIKE 'sim-%' AND time > now() - interval '10 minutes'
 GROUP BY city
 ORDER BY pm2_5_avg DESC;"""


#: The most processors the local stack runs (nakhon.raw's partitions; make up).
LOCAL_PROCESSORS_MAX = 6


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="publish readings of simulated sensors in Thai smart cities over MQTT",
        description=(
            "Publish a fleet of simulated sensors (air quality in SenML, noise in JSON, traffic as "
            "FIWARE TrafficFlowObserved, buses as positions) in Khon Kaen, Chiang Mai, Phuket, "
            "Rayong, Lampang and Bangkok to the MQTT broker (NAKHON_MQTT_HOST), showing how many "
            "readings the pipeline stored and rejected. It publishes as the bridge "
            "'simulator' (a vendor cloud for its cities' sensors), made or renewed through the "
            "broker's admin (NAKHON_MQTT_ADMIN_PASSWORD) unless --username is given."
        ),
    )
    p.add_argument("--sensors", type=int, default=300, help="fleet size (default 300)")
    p.add_argument(
        "--interval", type=float, default=5.0, help="seconds between two messages of a sensor"
    )
    p.add_argument(
        "--duration", type=float, default=60.0, help="seconds to publish; 0 runs until Ctrl-C"
    )
    p.add_argument(
        "--faulty",
        type=float,
        default=0.01,
        help="share of faulty payloads (truncated or out of range), default 0.01",
    )
    p.add_argument("--summary", action="store_true", help="print what landed at the end")
    p.add_argument("--username", help="publish as this MQTT user (default: the bridge simulator)")
    p.add_argument("--password", help="its password (default: NAKHON_SIMULATOR_PASSWORD)")
    p.add_argument(
        "--metrics-url",
        action="append",
        default=None,
        help=(
            "a processor's /metrics to read rejections from; repeat for each processor "
            "(default: the local stack's, NAKHON_PROCESSORS of them)"
        ),
    )
    p.set_defaults(func=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    fleet = build_fleet(args.sensors)
    # The local stack's processor i serves /metrics on the first's port + 10*(i-1)
    # (nakhon/local_stack.env); those not running are skipped.
    metrics_url = args.metrics_url or [
        f"http://127.0.0.1:{settings.processor.metrics_port + 10 * i}/metrics"
        for i in range(LOCAL_PROCESSORS_MAX)
    ]
    # Only reads rows: as the reader, like the API.
    try:
        dsn = settings.db.service_dsn("api")
    except MissingDsnError as exc:
        log.error("%s", exc)
        return 2
    endpoint = MqttEndpoint.from_settings(settings.mqtt)
    try:
        username, password = _credentials(args, settings, fleet)
    except (DynsecError, ProvisionError) as exc:
        log.error("cannot get MQTT credentials for the simulator: %s", exc)
        return 1
    client = endpoint.client()
    client.username_pw_set(username, password)
    client.max_inflight_messages_set(2000)
    answered = threading.Event()
    connack: list[ReasonCode] = []

    def on_connect(c: mqtt.Client, u: object, f: object, reason: ReasonCode, p: object) -> None:
        connack.append(reason)
        answered.set()

    client.on_connect = on_connect
    try:
        endpoint.connect(client)
    except OSError as exc:
        log.error("cannot reach MQTT %s: %s", endpoint, exc)
        return 1
    client.loop_start()
    if not answered.wait(10) or connack[0].is_failure:
        log.error("the broker %s refused %s: %s", endpoint, username, connack or "no answer")
        client.loop_stop()
        return 1
    started = utcnow()
    rejected_before = _rejections(metrics_url)
    try:
        sent = _publish(client, fleet, args, dsn, started, metrics_url, rejected_before)
    finally:
        client.disconnect()
        client.loop_stop()
    if args.summary:
        _summary(dsn, started, sent, metrics_url, rejected_before)
    return 0


def _credentials(
    args: argparse.Namespace, settings: Settings, fleet: list[SimSensor]
) -> tuple[str, str]:
    """The simulator publishes as a bridge for its cities, renewed on every run."""
    if args.username:
        return args.username, args.password or ""
    admin_password = settings.mqtt.admin_password
    if admin_password is None:
        raise ProvisionError(
            "no NAKHON_MQTT_ADMIN_PASSWORD to make the simulator's bridge with "
            "(run from the checkout after make up, or pass --username/--password)"
        )
    identity = bridge_identity("simulator", sorted({f"city/{s.city.slug}/#" for s in fleet}))
    endpoint = MqttEndpoint.from_settings(settings.mqtt)
    with DynsecAdmin(endpoint, admin_password.get_secret_value()) as admin:
        if identity.username in provision.existing_usernames(admin):
            provision.revoke(admin, identity)
        creds: Credentials = provision.create(admin, [(identity, None)])[0]
    log.info("publishing as %s to %s", creds.username, ", ".join(creds.publish))
    return creds.username, creds.password


def _publish(
    client: mqtt.Client,
    fleet: list[SimSensor],
    args: argparse.Namespace,
    dsn: str,
    started: datetime,
    metrics_url: list[str],
    rejected_before: float | None,
) -> int:
    """Publish until the duration is over; return the readings published."""
    rng = random.Random(42)
    slots = max(1, round(args.interval / 0.1))
    t0 = time.monotonic()
    tick = 0
    readings = messages = 0
    next_progress = t0
    try:
        while args.duration <= 0 or time.monotonic() - t0 < args.duration:
            now = utcnow()
            for sensor in fleet[tick % slots :: slots]:
                if rng.random() < args.faulty:
                    body, good = faulty_payload(sensor, now, rng)
                else:
                    body, good = payload(sensor, now, rng), READINGS_PER_MESSAGE[sensor.kind]
                client.publish(sensor.topic, body, qos=1)
                messages += 1
                readings += good
            tick += 1
            if time.monotonic() >= next_progress:
                _progress(messages, readings, dsn, started, metrics_url, rejected_before, t0, args)
                next_progress += 1.0
            time.sleep(max(0.0, t0 + tick * 0.1 - time.monotonic()))
    except KeyboardInterrupt:
        pass
    sys.stderr.write("\n")
    return readings


def _progress(
    messages: int,
    readings: int,
    dsn: str,
    started: datetime,
    metrics_url: list[str],
    rejected_before: float | None,
    t0: float,
    args: argparse.Namespace,
) -> None:
    stored = _stored(dsn, started)
    rejected = _rejections(metrics_url)
    rej = (
        "?" if rejected is None or rejected_before is None else f"{rejected - rejected_before:.0f}"
    )
    left = (
        ""
        if args.duration <= 0
        else f" | {max(0, args.duration - (time.monotonic() - t0)):.0f}s left"
    )
    sys.stderr.write(
        f"\r  published {messages:>7} messages ({readings:>7} readings)"
        f" | stored {stored:>7} | rejected {rej:>4}{left}   "
    )
    sys.stderr.flush()


def _stored(dsn: str, since: datetime) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*) FROM readings WHERE sensor_id LIKE 'sim-%%' AND time >= %s",
                (since - timedelta(seconds=1),),
            ).fetchone()
    except psycopg.OperationalError:
        return -1
    return int(row[0]) if row else 0


def _rejections(metrics_urls: list[str]) -> float | None:
    """The processors' total of rejected payloads and values, or None if none answers."""
    total: float | None = None
    for url in metrics_urls:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310  (operator's URL)
                text = resp.read().decode()
        except OSError:
            continue
        total = (total or 0.0) + sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("nakhon_processor_rejections_total{")
        )
    return total


def _summary(
    dsn: str,
    started: datetime,
    published: int,
    metrics_url: list[str],
    rejected_before: float | None,
) -> None:
    deadline = time.monotonic() + 20
    while _stored(dsn, started) < published and time.monotonic() < deadline:
        time.sleep(0.5)
    with psycopg.connect(dsn) as conn:
        per_city = conn.execute(
            """SELECT city, metric, count(*) FROM readings
                WHERE sensor_id LIKE 'sim-%%' AND time >= %s
                GROUP BY city, metric ORDER BY city, metric""",
            (started - timedelta(seconds=1),),
        ).fetchall()
        positions = conn.execute(
            "SELECT count(*) FROM positions WHERE vehicle_id LIKE 'sim-%%' AND time >= %s",
            (started - timedelta(seconds=1),),
        ).fetchone()
        sample = conn.execute(SAMPLE_SQL).fetchall()
    stored = sum(n for _, _, n in per_city)
    rejected = _rejections(metrics_url)
    print(f"\nPublished {published} valid readings; stored {stored}", end="")
    if rejected is not None and rejected_before is not None:
        print(f"; {rejected - rejected_before:.0f} faulty payloads or values rejected", end="")
    print(f"; {positions[0] if positions else 0} bus positions.\n")
    print("Rows per city and metric:")
    cities = sorted({c for c, _, _ in per_city})
    metrics = sorted({m for _, m, _ in per_city})
    counts = {(c, m): n for c, m, n in per_city}
    print("  " + f"{'city':<12}" + "".join(f"{m:>14}" for m in metrics))
    for c in cities:
        print("  " + f"{c:<12}" + "".join(f"{counts.get((c, m), 0):>14}" for m in metrics))
    print(
        '\nA sample query (psql "$NAKHON_DB_API_DSN", the reader\'s DSN in'
        " .nakhon/secrets/local.env):\n"
    )
    print("  " + SAMPLE_SQL.replace("\n", "\n  "))
    print(
        f"\n  {'city':<12}{'pm2_5_avg':>10}{'pm2_5_max':>10}{'stations':>9}"
        "   Thai AQI (10-min mean)"
    )
    for city, avg, peak, stations in sample:
        aqi = thai_aqi(Concentrations(pm2_5_24h=float(avg)))
        band = f"{aqi.index:>4} {aqi.band}" if aqi else ""
        print(f"  {city:<12}{avg:>10}{peak:>10}{stations:>9}   {band}")
    print(
        "\nWhere to look next:\n"
        f"  API docs           http://127.0.0.1:{LOCAL_STACK.api_port}/docs"
        "  (e.g. /v1/cities, /v1/aqi?city=chiang_mai)\n"
        "  API key            /v1 needs header X-API-Key: make up keeps an all-cities key as\n"
        "                     NAKHON_API_LOCAL_KEY in .nakhon/secrets/local.env\n"
        "  try it             curl -sH \"X-API-Key: $(sed -n 's/^NAKHON_API_LOCAL_KEY=//p'"
        f' .nakhon/secrets/local.env)" http://127.0.0.1:{LOCAL_STACK.api_port}/v1/cities\n'
        f"  gateway metrics    http://127.0.0.1:{LOCAL_STACK.gateway_metrics_port}/metrics\n"
        f"  processor metrics  http://127.0.0.1:{LOCAL_STACK.processor_metrics_port}/metrics\n"
        "  dead letters       nakhon deadletters stats  (then: deadletters show, replay)\n"
        "  your own device    nakhon devices add aq-1 --city chiang_mai  (prints its MQTT login;\n"
        "                     the broker refuses anonymous clients: docs/security.md)\n"
        "  logs               .nakhon/logs/\n"
        "  stop everything    make down"
    )
