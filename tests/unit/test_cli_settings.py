"""A setting that does not validate stops a command with a clear message, not a traceback."""

from __future__ import annotations

import pytest

from nakhon.cli import main


def test_a_bad_setting_is_a_configuration_error_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NAKHON_ENV_FILE", "/dev/null")
    monkeypatch.setenv("NAKHON_PROCESSOR_METRIC_ALIASES", '{"pm_two_five": "pm_twenty"}')
    assert main(["cities", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nakhon: configuration error: processor.metric_aliases")
    assert "pm_twenty" in err and "Traceback" not in err
