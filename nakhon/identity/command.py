"""``nakhon devices|bridges|gateways|broker``: who may publish and subscribe at the broker.

Exit codes: 0 done; 1 refused (exists already, unknown, not registered);
2 bad arguments; 3 the broker or the database cannot be reached.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from pydantic import ValidationError

from nakhon.cli import configure_logging
from nakhon.config import DEFAULT_TOPIC_FILTERS, Settings, load_settings
from nakhon.env_file import read_env_file, update_env_file
from nakhon.identity import provision
from nakhon.identity.certificates import CertificateError, issue_device_certificate
from nakhon.identity.dynsec import DynsecAdmin, DynsecError, set_role_acls, write_initial_config
from nakhon.identity.provision import Credentials, ProvisionError
from nakhon.identity.roles import (
    Identity,
    IdentityError,
    admin_identity,
    bridge_identity,
    device_identity,
    gateway_identity,
    new_password,
)
from nakhon.mqtt_connection import MqttEndpoint
from nakhon.storage.sensor_registry import SensorRecord

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

#: The local stack's certificate authority (make up generates it).
LOCAL_CA_CERT = Path(".nakhon/tls/ca.crt")
LOCAL_CA_KEY = Path(".nakhon/tls/ca.key")

_ROOT_HELP = (
    "topic root standing for 'city' (default: city); only for a deployment whose "
    "routes (NAKHON_PROCESSOR_ROUTES) use another root"
)


_CITY_BROKER_HELP = (
    "the devices' city: reach the broker NAKHON_MQTT_CITY_BROKERS maps it to "
    "(default: NAKHON_MQTT_HOST:PORT)"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_devices(sub)
    _register_bridges(sub)
    _register_gateways(sub)
    _register_broker(sub)


# devices -----------------------------------------------------------------------


def _register_devices(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "devices",
        help="sensors' MQTT credentials: add, import, rotate, revoke, list",
        description=(
            "Each device connects to the broker with its own username (its sensor id) and "
            "password, and may publish only under city/<its city>/<its id>/. Needs the "
            "broker's admin password (NAKHON_MQTT_ADMIN_PASSWORD; make up writes it to "
            ".nakhon/secrets/local.env) and, to register sensors, the database."
        ),
    )
    cmds = p.add_subparsers(title="commands", metavar="COMMAND", required=True)

    add = cmds.add_parser(
        "add",
        help="register a sensor and create its MQTT client; prints its password once",
        description=(
            "Register SENSOR_ID in CITY (sensor registry) and create its MQTT client. "
            "Prints the username, the password (generated unless --password is given; "
            "shown once, never stored in clear) and the topics it may publish to."
        ),
    )
    add.add_argument("sensor_id", metavar="SENSOR_ID", help="1-64 of [a-z0-9_-]")
    add.add_argument("--city", required=True, help="a registered city id (nakhon cities list)")
    add.add_argument("--password", help="use this password instead of a generated one")
    add.add_argument("--kind", help="sensor kind for the registry, e.g. air_quality")
    add.add_argument("--name", help="a human name for the registry")
    add.add_argument("--lat", type=float, help="latitude (with --lon)")
    add.add_argument("--lon", type=float, help="longitude (with --lat)")
    add.add_argument("--topic-root", default="city", help=_ROOT_HELP)
    add.add_argument("--json", action="store_true", help="print one JSON object")
    add.set_defaults(func=run_devices_add)

    imp = cmds.add_parser(
        "import",
        help="add a whole fleet from a CSV file, idempotently",
        description=(
            "Columns sensor_id,city and optionally password,kind,name,lat,lon. Devices that "
            "already have credentials are left as they are (reported unchanged). Generated "
            "passwords go to --credentials-out (created mode 600, default FILE with "
            ".credentials.csv), never to the screen or the log."
        ),
    )
    imp.add_argument("file", metavar="FILE.csv", type=Path)
    imp.add_argument("--credentials-out", type=Path, help="where to write the new credentials")
    imp.add_argument("--topic-root", default="city", help=_ROOT_HELP)
    imp.set_defaults(func=run_devices_import)

    rot = cmds.add_parser(
        "rotate",
        help="issue a new password (the device is disconnected at once)",
        description="Issue a new password for SENSOR_ID; the device is disconnected at once.",
    )
    rot.add_argument("sensor_id", metavar="SENSOR_ID")
    rot.add_argument("--password", help="use this password instead of a generated one")
    rot.add_argument("--json", action="store_true", help="print one JSON object")
    rot.add_argument(
        "--city",
        help=_CITY_BROKER_HELP,
    )
    rot.set_defaults(func=run_rotate, kind="device")
    rev = cmds.add_parser(
        "revoke",
        help="delete devices' credentials (disconnected at once)",
        description=(
            "Delete the MQTT credentials of each SENSOR_ID: connected ones are disconnected at "
            "once, and refused from then on. The sensors stay in the registry with their data."
        ),
    )
    rev.add_argument("sensor_ids", metavar="SENSOR_ID", nargs="+")
    rev.add_argument(
        "--city",
        help=_CITY_BROKER_HELP,
    )
    rev.set_defaults(func=run_revoke, kind="device")

    cert = cmds.add_parser(
        "certificate",
        help="issue a client certificate: the device logs in with it instead of a password",
        description=(
            "Write SENSOR_ID.key (mode 600) and SENSOR_ID.crt (CN = SENSOR_ID, signed by the "
            "CA) into --out. On the broker's certificate listener (the local stack's :8884) "
            "the certificate is the login and the device's role applies as for a password. "
            "The device must exist (nakhon devices add). Defaults: the local stack's CA."
        ),
    )
    cert.add_argument("sensor_id", metavar="SENSOR_ID")
    cert.add_argument("--ca-cert", type=Path, default=LOCAL_CA_CERT, help="default: %(default)s")
    cert.add_argument("--ca-key", type=Path, default=LOCAL_CA_KEY, help="default: %(default)s")
    cert.add_argument("--days", type=int, default=825, help="validity (default 825)")
    cert.add_argument("--out", type=Path, default=Path("."), help="folder (default: here)")
    cert.add_argument(
        "--city",
        help=_CITY_BROKER_HELP,
    )
    cert.set_defaults(func=run_certificate)

    ls = cmds.add_parser("list", help="every client the broker knows, with its topics")
    ls.add_argument("--json", action="store_true", help="print a JSON list")
    ls.add_argument(
        "--city",
        help=_CITY_BROKER_HELP,
    )
    ls.set_defaults(func=run_list, kind="device")


def run_devices_add(args: argparse.Namespace) -> int:
    try:
        identity = device_identity(args.sensor_id, args.city, args.topic_root)
        record = SensorRecord(
            sensor_id=args.sensor_id,
            city=args.city,
            kind=args.kind,
            name=args.name,
            lat=args.lat,
            lon=args.lon,
        )
    except (IdentityError, ValidationError) as exc:
        return _usage_error(exc)
    settings = _settings()

    def add(admin: DynsecAdmin) -> int:
        provision.register_sensors(settings.db.dsn.get_secret_value(), [record])
        [creds] = provision.create(admin, [(identity, args.password)])
        _print_credentials(creds, args.json)
        if not args.json and args.city in settings.mqtt.city_brokers:
            broker = MqttEndpoint.from_settings(settings.mqtt.for_city(args.city))
            print(f"{'broker:':<17} {broker}   ({args.city}'s, NAKHON_MQTT_CITY_BROKERS)")
        return EXIT_OK

    return _with_admin(settings, add, args.city)


def run_devices_import(args: argparse.Namespace) -> int:
    path: Path = args.file
    out: Path = args.credentials_out or path.with_suffix(".credentials.csv")
    try:
        rows = _read_device_csv(path, args.topic_root)
    except (OSError, ValueError) as exc:
        return _usage_error(exc)
    settings = _settings()
    # Each city's devices on the broker they connect to (NAKHON_MQTT_CITY_BROKERS).
    by_broker: dict[str, list[tuple[Identity, SensorRecord, str | None]]] = {}
    for row in rows:
        by_broker.setdefault(str(settings.mqtt.city_brokers.get(row[1].city, "")), []).append(row)
    created: list[Credentials] = []

    def run(group: list[tuple[Identity, SensorRecord, str | None]], admin: DynsecAdmin) -> int:
        existing = provision.existing_usernames(admin)
        new = [(i, rec, pw) for i, rec, pw in group if i.username not in existing]
        where = f" on {admin.endpoint}" if len(by_broker) > 1 else ""
        unchanged = len(group) - len(new)
        print(f"{path}: {len(group)} devices{where}, {unchanged} unchanged, {len(new)} new")
        if not new:
            return EXIT_OK
        provision.register_sensors(settings.db.dsn.get_secret_value(), [r for _, r, _ in new])
        for start in range(0, len(new), 500):
            chunk = new[start : start + 500]
            created.extend(provision.create(admin, [(i, pw) for i, _, pw in chunk]))
            print(f"  created {len(created)}/{len(new)}", file=sys.stderr)
        return EXIT_OK

    status = EXIT_OK
    for group in by_broker.values():
        status = _with_admin(settings, functools.partial(run, group), group[0][1].city)
        if status != EXIT_OK:
            break
    if created:
        # Even after a failure: what was created has credentials nobody else holds.
        _write_credentials_csv(out, created)
        print(f"credentials of the {len(created)} new devices: {out} (mode 600)")
    return status


def run_certificate(args: argparse.Namespace) -> int:
    for f in (args.ca_cert, args.ca_key):
        if not f.is_file():
            return _usage_error(
                FileNotFoundError(f"no CA file {f} (make up generates the local CA)")
            )
    settings = _settings()

    def issue(admin: DynsecAdmin) -> int:
        if args.sensor_id not in provision.existing_usernames(admin):
            raise ProvisionError(
                f"no device {args.sensor_id!r} at the broker: nakhon devices add it first"
            )
        made = issue_device_certificate(
            args.sensor_id, args.ca_cert, args.ca_key, args.out, args.days
        )
        print(f"certificate: {made.certificate}")
        print(f"key:         {made.key}   (mode 600: give it to the device only)")
        return EXIT_OK

    try:
        return _with_admin(settings, issue, args.city)
    except CertificateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED


def _read_device_csv(
    path: Path, topic_root: str
) -> list[tuple[Identity, SensorRecord, str | None]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = {h.strip().lower() for h in reader.fieldnames or []}
        if not {"sensor_id", "city"} <= header:
            raise ValueError(f"{path}: the header must name at least sensor_id and city")
        rows = []
        errors = []
        for line, raw in enumerate(reader, 2):
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
            try:
                record = SensorRecord.model_validate(
                    {
                        "sensor_id": row["sensor_id"],
                        "city": row["city"],
                        "kind": row.get("kind") or None,
                        "name": row.get("name") or None,
                        "lat": row.get("lat") or None,
                        "lon": row.get("lon") or None,
                    }
                )
                identity = device_identity(record.sensor_id, record.city, topic_root)
            except (ValidationError, IdentityError) as exc:
                errors.append(f"line {line}: {str(exc).splitlines()[0]}")
                continue
            rows.append((identity, record, row.get("password") or None))
    if errors:
        raise ValueError(
            f"{path}: {len(errors)} bad rows, nothing imported:\n  " + "\n  ".join(errors[:20])
        )
    return rows


def _write_credentials_csv(path: Path, creds: list[Credentials]) -> None:
    """Create ``path`` readable by its owner only, before any secret is written to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["username", "password", "topic_prefix"])
        for c in creds:
            w.writerow([c.username, c.password, c.topic_prefix or ""])


# bridges and gateways --------------------------------------------------------


def _register_bridges(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bridges",
        help="integrations that publish for many devices (LoRaWAN servers, vendor clouds)",
        description=(
            "A bridge (The Things Stack on v3/#, ChirpStack on application/#, a vendor cloud "
            "on city/khon_kaen/#) connects as bridge:<NAME> and may publish only under its "
            "--topic filters."
        ),
    )
    cmds = p.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add = cmds.add_parser("add", help="create a bridge; prints its password once")
    add.add_argument("name", metavar="NAME", help="1-64 of [a-z0-9_-]")
    add.add_argument(
        "--topic",
        action="append",
        required=True,
        metavar="FILTER",
        help="a topic filter it may publish to (repeat for several), e.g. 'v3/my-app@ttn/#'",
    )
    add.add_argument("--password", help="use this password instead of a generated one")
    add.add_argument("--json", action="store_true", help="print one JSON object")
    add.set_defaults(func=run_add, kind="bridge")
    _register_rotate_revoke_list(cmds, "bridge")


def _register_gateways(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "gateways",
        help="Nakhon gateways' MQTT credentials (the only readers of device topics)",
        description=(
            "A gateway connects as gateway:<NAME> with a random client id the broker "
            "requires, and may only subscribe to $share/<GROUP>/<filter>."
        ),
    )
    cmds = p.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add = cmds.add_parser(
        "add",
        help="create a gateway; prints its password and client id once",
        description=(
            "Create gateway NAME. --env-file writes NAKHON_MQTT_USERNAME, _PASSWORD and "
            "_CLIENT_ID into FILE (mode 600; other lines kept) instead of printing them."
        ),
    )
    add.add_argument("name", metavar="NAME", help="1-64 of [a-z0-9_-]")
    add.add_argument(
        "--share-group",
        default="",
        help=(
            "read only through this shared subscription group (default: none, the filters "
            "themselves, which Mosquitto 2.0 keeps across its restarts)"
        ),
    )
    add.add_argument(
        "--topic",
        action="append",
        metavar="FILTER",
        help=f"a filter it may read (repeat; default: {' '.join(DEFAULT_TOPIC_FILTERS)})",
    )
    add.add_argument("--password", help="use this password instead of a generated one")
    add.add_argument("--json", action="store_true", help="print one JSON object")
    add.add_argument("--env-file", type=Path, help="write the credentials into this env file")
    add.set_defaults(func=run_add, kind="gateway")
    _register_rotate_revoke_list(cmds, "gateway")


def _register_rotate_revoke_list(
    cmds: argparse._SubParsersAction[argparse.ArgumentParser], kind: str
) -> None:
    rot = cmds.add_parser("rotate", help=f"a new password for a {kind} (disconnected at once)")
    rot.add_argument("name", metavar="NAME")
    rot.add_argument("--password", help="use this password instead of a generated one")
    rot.add_argument("--json", action="store_true", help="print one JSON object")
    rot.set_defaults(func=run_rotate, kind=kind)
    rev = cmds.add_parser("revoke", help=f"delete a {kind}'s credentials (disconnected at once)")
    rev.add_argument("name", metavar="NAME")
    rev.set_defaults(func=run_revoke, kind=kind)
    ls = cmds.add_parser("list", help="every client the broker knows, with its topics")
    ls.add_argument("--json", action="store_true", help="print a JSON list")
    ls.set_defaults(func=run_list, kind=kind)


def run_add(args: argparse.Namespace) -> int:
    try:
        if args.kind == "bridge":
            identity = bridge_identity(args.name, args.topic)
        else:
            identity = gateway_identity(
                args.name, args.share_group, args.topic or DEFAULT_TOPIC_FILTERS
            )
    except IdentityError as exc:
        return _usage_error(exc)
    settings = _settings()

    def add(admin: DynsecAdmin) -> int:
        [creds] = provision.create(admin, [(identity, args.password)])
        if getattr(args, "env_file", None):
            update_env_file(args.env_file, _gateway_env(creds, args.share_group, args.topic))
            print(f"gateway {creds.username}: credentials written to {args.env_file}")
        else:
            _print_credentials(creds, args.json)
        return EXIT_OK

    return _with_admin(settings, add)


def _gateway_env(
    creds: Credentials, share_group: str = "", filters: Sequence[str] | None = None
) -> dict[str, str]:
    """A gateway's NAKHON_MQTT_* settings: its login, and what its role lets it read."""
    env = {
        "NAKHON_MQTT_USERNAME": creds.username,
        "NAKHON_MQTT_PASSWORD": creds.password,
        "NAKHON_MQTT_CLIENT_ID": creds.clientid or "",
        "NAKHON_MQTT_SHARE_GROUP": share_group,
    }
    if filters:
        env["NAKHON_MQTT_TOPIC_FILTERS"] = json.dumps(list(filters))
    return env


def _identity_named(kind: str, name: str) -> Identity:
    """Enough of an existing identity to find its client and role (ACLs not needed)."""
    if kind == "device":
        return Identity("device", name, f"device:{name}", ())
    return Identity(kind, f"{kind}:{name}", f"{kind}:{name}", ())  # type: ignore[arg-type]


def run_rotate(args: argparse.Namespace) -> int:
    name = getattr(args, "sensor_id", None) or args.name
    identity = _identity_named(args.kind, name)
    settings = _settings()

    def rot(admin: DynsecAdmin) -> int:
        password = provision.rotate(admin, identity.username, args.password)
        creds = Credentials(identity.username, password, args.kind)
        if args.json:
            print(json.dumps({"username": creds.username, "password": password}))
        else:
            print(f"new password of {identity.username} (shown once): {password}")
        return EXIT_OK

    return _with_admin(settings, rot, getattr(args, "city", None))


def run_revoke(args: argparse.Namespace) -> int:
    names = getattr(args, "sensor_ids", None) or [args.name]
    identities = [_identity_named(args.kind, name) for name in names]
    settings = _settings()

    def rev(admin: DynsecAdmin) -> int:
        gone = provision.revoke_all(admin, identities)
        for identity in identities:
            if identity.username in gone:
                print(f"revoked {identity.username}: disconnected, and refused from now on")
            else:
                print(
                    f"error: {identity.username} has no credentials at the broker", file=sys.stderr
                )
        return EXIT_OK if len(gone) == len(identities) else EXIT_REFUSED

    return _with_admin(settings, rev, getattr(args, "city", None))


def run_list(args: argparse.Namespace) -> int:
    settings = _settings()

    def ls(admin: DynsecAdmin) -> int:
        rows = [r for r in provision.list_identities(admin) if r["kind"] == args.kind]
        if args.json:
            print(json.dumps(rows, indent=1))
            return EXIT_OK
        for r in rows:
            topics = r["publish"] + [f"sub {t}" for t in r["subscribe"]]
            state = "" if r["enabled"] else " (disabled)"
            print(f"{r['username']:<40} {', '.join(topics)}{state}")
        print(f"{len(rows)} {args.kind}s")
        return EXIT_OK

    return _with_admin(settings, ls, getattr(args, "city", None))


# broker init -------------------------------------------------------------------


def _register_broker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "broker",
        help="set up Mosquitto's dynamic security file for a new broker",
        description="Commands for the MQTT broker itself.",
    )
    cmds = p.add_subparsers(title="commands", metavar="COMMAND", required=True)
    init = cmds.add_parser(
        "init",
        help="write the dynamic security file: the admin and the first gateway",
        description=(
            "Create Mosquitto's dynamic security file DYNSEC_FILE (mode 600) holding the "
            "admin (admin:nakhon) and gateway GATEWAY with generated passwords, everything "
            "else refused, and write their credentials into ENV_FILE (mode 600) as "
            "NAKHON_MQTT_* lines. Does nothing if both exist already. Load the file with "
            "'plugin .../mosquitto_dynamic_security.so' and 'plugin_opt_config_file'."
        ),
    )
    init.add_argument("--dynsec-file", type=Path, required=True, metavar="DYNSEC_FILE")
    init.add_argument("--env-file", type=Path, required=True, metavar="ENV_FILE")
    init.add_argument("--gateway", default="local", metavar="GATEWAY", help="default: local")
    init.add_argument("--share-group", default="", help="shared subscription group (default: none)")
    init.add_argument(
        "--dynsec-owner",
        metavar="UID:GID",
        help="give DYNSEC_FILE to the broker's user (root only)",
    )
    init.add_argument(
        "--env-owner", metavar="UID:GID", help="give ENV_FILE to the services' user (root only)"
    )
    init.set_defaults(func=run_broker_init)


def run_broker_init(args: argparse.Namespace) -> int:
    dynsec: Path = args.dynsec_file
    env_file: Path = args.env_file
    env = read_env_file(env_file)
    if dynsec.exists():
        if env.get("NAKHON_MQTT_ADMIN_PASSWORD") and env.get("NAKHON_MQTT_PASSWORD"):
            # An earlier version's gateway role (e.g. shared subscriptions only): brought to
            # what this version's gateway subscribes to.
            gateway = gateway_identity(args.gateway, args.share_group, DEFAULT_TOPIC_FILTERS)
            update_env_file(env_file, {"NAKHON_MQTT_SHARE_GROUP": args.share_group})
            if set_role_acls(dynsec, gateway):
                print(f"{dynsec}: role {gateway.rolename} updated to {gateway.subscribe_topics}")
            else:
                print(f"{dynsec} exists, credentials in {env_file}: nothing to do")
            return EXIT_OK
        print(
            f"error: {dynsec} exists but {env_file} lacks the credentials made with it; "
            "delete both to start over (make clean does)",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    admin_pw, gateway_pw = new_password(), new_password()
    gateway = gateway_identity(args.gateway, args.share_group, DEFAULT_TOPIC_FILTERS)
    write_initial_config(dynsec, [(admin_identity(), admin_pw), (gateway, gateway_pw)])
    update_env_file(
        env_file,
        {"NAKHON_MQTT_ADMIN_PASSWORD": admin_pw}
        | _gateway_env(Credentials.of(gateway, gateway_pw), args.share_group),
    )
    for path, owner in ((dynsec, args.dynsec_owner), (env_file, args.env_owner)):
        if owner:
            uid, _, gid = owner.partition(":")
            os.chown(path, int(uid), int(gid or uid))
    print(f"wrote {dynsec} (admin and gateway {args.gateway}) and their credentials to {env_file}")
    return EXIT_OK


# shared ------------------------------------------------------------------------


def _settings() -> Settings:
    settings = load_settings()
    configure_logging(settings.log_level)
    return settings


def _with_admin(
    settings: Settings, action: Callable[[DynsecAdmin], int], city: str | None = None
) -> int:
    """Run ``action`` with an admin connection, turning known failures into exit codes.

    With ``city``: on the broker that city's devices connect to
    (``NAKHON_MQTT_CITY_BROKERS``), else on ``NAKHON_MQTT_HOST:PORT``.
    """
    try:
        mqtt = settings.mqtt.for_city(city) if city else settings.mqtt
    except (ValueError, ValidationError) as exc:
        return _usage_error(exc)
    password = mqtt.admin_password
    if password is None:
        print(
            "error: NAKHON_MQTT_ADMIN_PASSWORD is not set (the local stack keeps it in "
            ".nakhon/secrets/local.env: run this from the checkout, after make up)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        with DynsecAdmin(MqttEndpoint.from_settings(mqtt), password.get_secret_value()) as admin:
            return action(admin)
    except ProvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except DynsecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except psycopg.OperationalError as exc:
        print(f"error: cannot reach the database: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except psycopg.Error as exc:
        print(f"error: the database refused ({exc}); has 'nakhon migrate' run?", file=sys.stderr)
        return EXIT_UNREACHABLE


def _print_credentials(creds: Credentials, as_json: bool) -> None:
    if as_json:
        print(json.dumps(creds.to_json()))
        return
    lines: list[tuple[str, Any]] = [
        ("username", creds.username),
        ("password", f"{creds.password}   (shown once: store it now)"),
    ]
    if creds.clientid:
        lines.append(("client id", f"{creds.clientid}   (required: the broker refuses others)"))
    if creds.publish:
        lines.append(("may publish to", ", ".join(creds.publish)))
    if creds.subscribe:
        lines.append(("may subscribe to", ", ".join(creds.subscribe)))
    for k, v in lines:
        print(f"{k + ':':<17} {v}")


def _usage_error(exc: Exception) -> int:
    text = str(exc)
    if isinstance(exc, ValidationError):
        text = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    print(f"error: {text}", file=sys.stderr)
    return EXIT_USAGE
