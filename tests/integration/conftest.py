"""Integration tests run against the real local stack.

The session fixture ``stack`` reuses a stack that already answers (``make up``
ran before) or starts one with ``deploy/local/stack.sh up``.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nakhon.config import load_settings

REPO = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO / "deploy" / "local" / "stack.sh"


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
    mqtt_port: int = 1883
    kafka_bootstrap: str = "127.0.0.1:9092"

    @classmethod
    def from_settings(cls) -> Stack:
        db = load_settings().db
        return cls(
            dsn=db.dsn.get_secret_value(),
            writer_dsn=db.service_dsn("processor"),
            reader_dsn=db.service_dsn("api"),
        )


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
    if not all(port_answers(p) for p in (1883, 9092, 5432)):
        subprocess.run([str(STACK_SCRIPT), "up"], check=True)
    yield Stack.from_settings()
