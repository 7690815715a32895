"""Integration tests run against the real local stack.

The session fixture ``stack`` reuses a stack that already answers (``make up``
ran before) or starts one with ``deploy/local/stack.sh up``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from nakhon.config import load_settings
from nakhon.local_stack import LOCAL_STACK

REPO = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO / "deploy" / "local" / "stack.sh"
#: The local cluster's unix sockets (deploy/local/services/postgres.sh; a symlink if relocated).
PG_SOCKETS = Path(os.environ.get("NAKHON_STATE_DIR", REPO / ".nakhon")) / "postgres" / "sockets"
PSQL = Path("/usr/lib/postgresql/15/bin/psql")


def _psql_as_superuser(database: str, statement: str) -> None:
    """One statement as ``postgres`` through the socket (peer), as ``make up`` administers."""
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(PSQL), "-X", "-q", "-v", "ON_ERROR_STOP=1",
         "-h", str(PG_SOCKETS.resolve()), "-U", "postgres", "-d", database, "-c", statement],
        check=True, cwd="/", capture_output=True,
    )  # fmt: skip


@dataclass(frozen=True)
class FreshDatabase:
    """An empty database with TimescaleDB, owned by ``nakhon_owner``, not yet migrated."""

    name: str
    dsn: str = field(repr=False)
    writer_dsn: str = field(repr=False)
    reader_dsn: str = field(repr=False)


@dataclass(frozen=True)
class Stack:
    """The local stack, with the DSNs ``make up`` generated (``.nakhon/secrets/local.env``).

    ``dsn`` is the schema owner's: tests seed and clean up with it.
    ``writer_dsn`` and ``reader_dsn`` are what the processor and the API use.
    """

    # Out of repr: a failing test prints its fixtures, and these hold passwords.
    dsn: str = field(repr=False)
    writer_dsn: str = field(repr=False)
    reader_dsn: str = field(repr=False)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = LOCAL_STACK.mqtt_port
    kafka_bootstrap: str = LOCAL_STACK.kafka_bootstrap

    @classmethod
    def from_settings(cls) -> Stack:
        db = load_settings().db
        return cls(
            dsn=db.dsn.get_secret_value(),
            writer_dsn=db.service_dsn("processor"),
            reader_dsn=db.service_dsn("api"),
        )

    @contextmanager
    def fresh_database(self) -> Iterator[FreshDatabase]:
        """A new database for one test, dropped afterwards.

        No service role may create databases, so it is made through the local
        cluster's superuser socket (root only, like ``make up``); elsewhere the
        test is skipped.
        """
        if os.geteuid() != 0 or not PG_SOCKETS.exists():
            pytest.skip("a fresh database needs the local stack's superuser socket (root)")
        name = f"nakhon_fresh_{uuid.uuid4().hex[:8]}"
        _psql_as_superuser("postgres", f"CREATE DATABASE {name} OWNER nakhon_owner")
        try:
            _psql_as_superuser(name, "CREATE EXTENSION timescaledb")
            yield FreshDatabase(
                name,
                make_conninfo(self.dsn, dbname=name),
                make_conninfo(self.writer_dsn, dbname=name),
                make_conninfo(self.reader_dsn, dbname=name),
            )
        finally:
            _psql_as_superuser("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    if not all(
        port_answers(p)
        for p in (LOCAL_STACK.mqtt_port, LOCAL_STACK.kafka_port, LOCAL_STACK.pg_port)
    ):
        subprocess.run([str(STACK_SCRIPT), "up"], check=True)
    yield Stack.from_settings()
