"""The Prometheus configuration and alert rules, checked by promtool.

promtool comes with Debian's ``prometheus`` package, which the local stack
installs (deploy/local/services/prometheus.sh); the rules' unit tests are in
deploy/prometheus/tests/.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import REPO

PROMETHEUS = REPO / "deploy" / "prometheus"
LOCAL_CONFIG = REPO / ".nakhon" / "prometheus" / "prometheus.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make up` installs Debian's prometheus package")
    return path


def run(promtool: str, *args: str | Path) -> str:
    result = subprocess.run(
        [promtool, *map(str, args)],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_compose_config_is_valid(promtool: str) -> None:
    output = run(promtool, "check", "config", PROMETHEUS / "prometheus.yml")
    assert "1 rule files found" in output


def test_local_stack_config_is_valid(promtool: str) -> None:
    """The configuration deploy/local/services/prometheus.sh wrote, when the stack ran."""
    if not LOCAL_CONFIG.exists():
        pytest.skip("the local Prometheus has not been started (make up)")
    run(promtool, "check", "config", LOCAL_CONFIG)


def test_rules_are_valid(promtool: str) -> None:
    rules = sorted((PROMETHEUS / "rules").glob("*.yml"))
    assert rules
    run(promtool, "check", "rules", *rules)


def test_rules_pass_their_unit_tests(promtool: str) -> None:
    tests = sorted((PROMETHEUS / "tests").glob("*_test.yml"))
    assert tests
    output = run(promtool, "test", "rules", *tests)
    assert "SUCCESS" in output


def test_every_alert_is_unit_tested() -> None:
    import yaml

    alerts = {
        rule["alert"]
        for path in (PROMETHEUS / "rules").glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested = {
        case["alertname"]
        for path in (PROMETHEUS / "tests").glob("*_test.yml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == tested, f"alerts never seen firing in a test: {alerts - tested}"
