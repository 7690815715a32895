"""Integration tests run against the real local stack.

The session fixture ``stack`` reuses a stack that already answers (``make up``
ran before) or starts one with ``deploy/local/stack.sh up``.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO / "deploy" / "local" / "stack.sh"


@dataclass(frozen=True)
class Stack:
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    kafka_bootstrap: str = "127.0.0.1:9092"
    dsn: str = "postgresql://nakhon:nakhon@127.0.0.1:5432/nakhon"


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
    yield Stack()
