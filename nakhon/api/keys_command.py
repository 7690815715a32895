"""``nakhon api-keys create|list|revoke``: the keys city apps read the API with."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import psycopg

from nakhon.api.key_store import (
    ApiKeyRequestError,
    create_api_key,
    ensure_key_in_env_file,
    list_api_keys,
    revoke_api_key,
)
from nakhon.api.keys import SCOPES, StoredKey
from nakhon.cli import configure_logging
from nakhon.config import load_settings

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_DATABASE = 3

_DESCRIPTION = """\
An API key reads only its cities (another city's sensors, series, AQI and
vehicles are 404 to it) and its scopes (403 for the others). The key is
printed once, at creation; the database keeps only its SHA-256. A revoked
key stops working within the API's key cache time (NAKHON_API_KEY_CACHE_S,
5 s). The database is NAKHON_DB_DSN.
Exit codes: 0 done; 2 invalid input (nothing written); 3 database unreachable."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "api-keys",
        help="create, list and revoke API keys (cities and scopes per key)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    c = actions.add_parser("create", help="create a key and print it (once)")
    c.add_argument("--name", required=True, help="who or what the key is for")
    where = c.add_mutually_exclusive_group(required=True)
    where.add_argument("--city", action="append", dest="cities", help="a registered city id")
    where.add_argument("--all-cities", action="store_true", help="every city, present and future")
    c.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        choices=SCOPES,
        help="repeatable; default: readings, aqi, sensors (vehicles only when asked)",
    )
    c.add_argument("--expires", type=_expiry, help="YYYY-MM-DD (the key ends that day, UTC)")
    c.add_argument("--json", action="store_true", help="print a JSON object (key, id, ...)")
    c.set_defaults(func=run_create)
    ls = actions.add_parser("list", help="list keys (never the keys themselves)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)
    e = actions.add_parser(
        "ensure-env",
        help="keep an all-cities key in an env file (the local stack's NAKHON_API_LOCAL_KEY)",
    )
    e.add_argument("--env-file", type=Path, required=True)
    e.add_argument("--variable", default="NAKHON_API_LOCAL_KEY")
    e.add_argument("--name", default="local stack (make up)")
    e.set_defaults(func=run_ensure_env)
    r = actions.add_parser("revoke", help="revoke a key by its id")
    r.add_argument("id")
    r.set_defaults(func=run_revoke)


def _expiry(text: str) -> datetime:
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time.max, UTC)
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (YYYY-MM-DD)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _describe(k: StoredKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "name": k.name,
        "cities": "all" if k.all_cities else list(k.cities),
        "scopes": list(k.scopes),
        "created_at": k.created_at.isoformat(),
        "expires_at": k.expires_at.isoformat() if k.expires_at else None,
        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
    }


def _connect() -> psycopg.Connection[Any]:
    settings = load_settings()
    configure_logging(settings.log_level)
    return psycopg.connect(settings.db.dsn.get_secret_value())


def run_create(args: argparse.Namespace) -> int:
    try:
        with _connect() as conn:
            key, row = create_api_key(
                conn,
                args.name,
                cities=args.cities or (),
                all_cities=args.all_cities,
                scopes=args.scopes or ("readings", "aqi", "sensors"),
                expires_at=args.expires,
            )
    except ApiKeyRequestError as exc:
        print(f"nakhon api-keys create: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except psycopg.OperationalError as exc:
        print(f"nakhon api-keys create: database: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    if args.json:
        print(json.dumps({"key": key.key, **_describe(row)}, ensure_ascii=False))
    else:
        print(key.key)
        print(
            f"id {row.id}; cities {_describe(row)['cities']}; scopes {', '.join(row.scopes)}."
            " Store the key now: it is not shown again.",
            file=sys.stderr,
        )
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    try:
        with _connect() as conn:
            keys = list_api_keys(conn)
    except psycopg.OperationalError as exc:
        print(f"nakhon api-keys list: database: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    if args.json:
        print(json.dumps([_describe(k) for k in keys], ensure_ascii=False))
        return EXIT_OK
    now = datetime.now(UTC)
    for k in keys:
        d = _describe(k)
        state = "active" if k.active_at(now) else ("revoked" if k.revoked_at else "expired")
        cities = d["cities"] if k.all_cities else ",".join(k.cities)
        print(f"{k.id}  {state:<8} {k.name}  cities={cities}  scopes={','.join(k.scopes)}")
    return EXIT_OK


def run_revoke(args: argparse.Namespace) -> int:
    try:
        with _connect() as conn:
            found = revoke_api_key(conn, args.id)
    except psycopg.OperationalError as exc:
        print(f"nakhon api-keys revoke: database: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    if not found:
        print(f"nakhon api-keys revoke: no key {args.id!r}", file=sys.stderr)
        return EXIT_INVALID
    print(f"revoked {args.id}")
    return EXIT_OK


def run_ensure_env(args: argparse.Namespace) -> int:
    try:
        with _connect() as conn:
            ensure_key_in_env_file(conn, args.env_file, args.variable, args.name)
    except psycopg.OperationalError as exc:
        print(f"nakhon api-keys ensure-env: database: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    print(f"{args.variable} in {args.env_file} holds an active all-cities key")
    return EXIT_OK
