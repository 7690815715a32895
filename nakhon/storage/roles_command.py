"""``nakhon db init-roles``: the database roles and their DSNs, for the cluster's administrator.

The roles' passwords are generated once per deployment (kept when the env
file already holds them) and written, as one DSN per service, into an env
file (mode 600). The SQL that creates the roles is printed for a superuser to
run, or run at once with ``--admin-dsn``. The local stack pipes it into
``psql`` as the ``postgres`` OS user (deploy/local/services/postgres.sh): the
superuser is reached only through the local socket, never over TCP.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg
from psycopg import sql

from nakhon.env_file import read_env_file, update_env_file
from nakhon.local_stack import LOCAL_STACK
from nakhon.storage.roles import Endpoint, env_values, init_roles_sql, role_passwords


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser(
        "db",
        help="database administration: the roles nakhon_owner, nakhon_writer, nakhon_reader",
        description="Database administration (docs/security.md, 'Database roles').",
    )
    db_sub = db.add_subparsers(title="commands", metavar="COMMAND", required=True)
    init = db_sub.add_parser(
        "init-roles",
        help="make the roles' passwords and DSNs (ENV_FILE) and the SQL that creates the roles",
        description=(
            "Generate passwords for nakhon_owner, nakhon_writer and nakhon_reader (keeping those "
            "ENV_FILE already holds), write NAKHON_DB_DSN (owner), NAKHON_DB_PROCESSOR_DSN and "
            "NAKHON_DB_MAINTAIN_DSN (writer) and NAKHON_DB_API_DSN (reader) into ENV_FILE "
            "(mode 600), then print the SQL a superuser runs in the database to create or "
            "update the roles (it holds SCRAM verifiers, never a password), or run it with "
            "--admin-dsn. The roles' rights in the schema come from the migrations."
        ),
    )
    init.add_argument("--env-file", type=Path, required=True, metavar="ENV_FILE")
    init.add_argument("--host", default="127.0.0.1", help="host in the services' DSNs")
    init.add_argument(
        "--port", type=int, default=LOCAL_STACK.pg_port, help="port in the services' DSNs"
    )
    init.add_argument("--database", default="nakhon")
    init.add_argument(
        "--legacy-role",
        metavar="ROLE",
        help="an older single login: hand what it owns to nakhon_owner, then drop it",
    )
    init.add_argument(
        "--admin-dsn",
        metavar="DSN",
        help="run the SQL as this superuser (connected to the database) instead of printing it",
    )
    init.set_defaults(func=run_init_roles)


def run_init_roles(args: argparse.Namespace) -> int:
    endpoint = Endpoint(args.host, args.port, args.database)
    passwords = role_passwords(read_env_file(args.env_file))
    try:
        statements = init_roles_sql(args.database, passwords, args.legacy_role)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Written first: if the SQL then fails, the next run reuses these passwords.
    update_env_file(args.env_file, env_values(endpoint, passwords))
    if args.admin_dsn is None:
        sys.stdout.write(statements)
        return 0
    try:
        with psycopg.connect(args.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL(statements))  # generated above from checked names: trusted
    except psycopg.Error as exc:
        print(f"error: could not create the roles: {exc}", file=sys.stderr)
        return 1
    print(f"roles nakhon_owner, nakhon_writer, nakhon_reader ready; DSNs in {args.env_file}")
    return 0
