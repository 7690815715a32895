"""Property-based: schemathesis drives every operation of /openapi.json; no 5xx.

Bounded for CI: 30 examples per operation (~300 requests in all), against a
real server and database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from nakhon.storage.migrate import migrate
from tests.integration.conftest import Stack
from tests.integration.test_api import provision_key, serve, settings_for


@pytest.fixture(scope="module")
def base_url(stack: Stack) -> Iterator[str]:
    migrate(stack.dsn)
    with serve(settings_for(stack)) as url:
        yield url


@pytest.fixture(scope="module")
def api_key(stack: Stack) -> str:
    return provision_key(stack.dsn, "tests: schemathesis")


def test_no_server_errors(base_url: str, api_key: str) -> None:
    """Each operation gets its own bounded hypothesis run (the pytest plugin of
    schemathesis does not support this pytest; driving it directly does)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) >= 9
    calls = 0
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case: schemathesis.Case[Any]) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(headers={"X-API-Key": api_key}, checks=[not_a_server_error])

        check()
    assert calls >= 100  # the run really exercised the API
