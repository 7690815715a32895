"""The database roles: who may do what in TimescaleDB (docs/security.md, "Database roles").

Three roles, so no service holds more rights than its job:

- ``nakhon_owner`` owns the database and the schema and runs the migrations
  (``nakhon migrate``) and the operator's commands; no service logs in as it.
- ``nakhon_writer``: the processor and ``nakhon maintain``: inserts readings
  and positions, upserts sensors, refreshes the Apache edition's rollups and
  drops expired chunks; no DDL.
- ``nakhon_reader``: the API and Grafana: SELECT, by grants.

Roles are cluster-wide and carry passwords, so they are made by whoever
administers the cluster (``nakhon db init-roles``, run by ``make up`` through
the local superuser's socket); what each may do in the schema is a migration
(``0005_roles.sql``), so every deployment gets the same grants.

This module is pure: it makes passwords, SCRAM verifiers and the SQL that
creates the roles. The SQL carries only SCRAM-SHA-256 verifiers, never a
password, so neither the server's logs nor a pipe ever see one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from nakhon.local_stack import LOCAL_STACK

OWNER = "nakhon_owner"
WRITER = "nakhon_writer"
READER = "nakhon_reader"
#: The one login of the local stack before these roles (password ``nakhon``);
#: ``make up`` hands what it owned to ``nakhon_owner`` and drops it.
LEGACY_ROLE = "nakhon"

#: The env-file variable of each service's DSN (nakhon/config.py, DbSettings), and its role.
DSN_VARIABLES: Mapping[str, str] = {
    "NAKHON_DB_DSN": OWNER,
    "NAKHON_DB_PROCESSOR_DSN": WRITER,
    "NAKHON_DB_MAINTAIN_DSN": WRITER,
    "NAKHON_DB_API_DSN": READER,
}

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: PostgreSQL's own default for SCRAM verifiers (scram_iterations).
_SCRAM_ITERATIONS = 4096


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the services reach the database (the host and port in their DSNs)."""

    host: str = "127.0.0.1"
    port: int = LOCAL_STACK.pg_port
    database: str = "nakhon"

    def dsn(self, role: str, password: str) -> str:
        return (
            f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}"
            f"@{self.host}:{self.port}/{quote(self.database, safe='')}"
        )


def new_password() -> str:
    """32 random bytes, URL-safe: fits a DSN and an env file unquoted."""
    return secrets.token_urlsafe(32)


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802, RFC 7677).

    ``ALTER ROLE ... PASSWORD '<verifier>'`` sets the password without the
    server ever receiving it in clear.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def role_passwords(env: Mapping[str, str]) -> dict[str, str]:
    """Each role's password: the one its DSN in ``env`` already holds, else a new one.

    Re-running keeps the passwords a checkout already has, so ``make up``
    stays idempotent and running services keep working.
    """
    passwords: dict[str, str] = {}
    for variable, role in DSN_VARIABLES.items():
        if role in passwords or variable not in env:
            continue
        parts = urlsplit(env[variable])
        if parts.username and unquote(parts.username) == role and parts.password:
            passwords[role] = unquote(parts.password)
    for role in (OWNER, WRITER, READER):
        passwords.setdefault(role, new_password())
    return passwords


def env_values(endpoint: Endpoint, passwords: Mapping[str, str]) -> dict[str, str]:
    """The DSN variables to write into the env file."""
    return {var: endpoint.dsn(role, passwords[role]) for var, role in DSN_VARIABLES.items()}


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a plain lower-case PostgreSQL name")
    return name


def init_roles_sql(
    database: str, passwords: Mapping[str, str], legacy_role: str | None = None
) -> str:
    """SQL a superuser runs, connected to ``database``, to create or update the roles.

    Idempotent: roles are created when missing and always (re)given their
    attributes and password; the database is given to ``nakhon_owner``, and
    only the three roles may connect to it; only the owner and the writer
    (the processor's staging tables) may create temporary tables. With
    ``legacy_role``, whatever that role owns in ``database`` passes to the
    owner and the role is dropped (an existing checkout's upgrade).
    """
    db = _checked(database)
    parts = ["-- Nakhon's database roles (nakhon db init-roles; nakhon/storage/roles.py)"]
    for role in (OWNER, WRITER, READER):
        verifier = scram_verifier(passwords[role])
        parts.append(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}')"
            f" THEN CREATE ROLE {role}; END IF; END $$;\n"
            f"ALTER ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
            f" NOBYPASSRLS PASSWORD '{verifier}';"
        )
    parts.append(f"ALTER DATABASE {db} OWNER TO {OWNER};")
    if legacy_role is not None:
        legacy = _checked(legacy_role)
        if legacy in (OWNER, WRITER, READER):
            raise ValueError(f"{legacy} is one of Nakhon's roles, not a legacy one")
        parts.append(
            f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{legacy}') THEN\n"
            f"    REASSIGN OWNED BY {legacy} TO {OWNER};\n"
            f"    DROP OWNED BY {legacy};\n"
            f"    DROP ROLE {legacy};\n"
            f"END IF; END $$;"
        )
    parts.append(
        f"REVOKE ALL ON DATABASE {db} FROM PUBLIC;\n"
        f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {OWNER}, {WRITER};\n"
        f"GRANT CONNECT ON DATABASE {db} TO {READER};"
    )
    return "\n".join(parts) + "\n"
