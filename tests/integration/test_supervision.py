"""Services come back by themselves: the stack's supervisord restarts them.

``make up`` runs Nakhon's services under a supervisord of the stack's own
(deploy/local/services/supervisor.sh and nakhon.sh). One test kills the
stack's own gateway with SIGKILL, as a crash would, and sees a new one ready,
the restart counted by ``stack.sh status`` and seen in its metrics as a new
``process_start_time_seconds``. The gateway is the stage whose loss costs least:
the broker keeps its persistent session and redelivers what it had not
acknowledged, and no test uses it (they run gateways of their own). Another
runs a supervisord of its own, in a temporary state directory, with the same
program settings, to see a program that fails at start retried with a backoff
and then given up, not looped forever.
"""

from __future__ import annotations

import configparser
import itertools
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nakhon.local_stack import LOCAL_STACK
from tests.integration.conftest import REPO, STACK_SCRIPT, Stack

STATE = Path(os.environ.get("NAKHON_STATE_DIR", REPO / ".nakhon"))
RUN = STATE / "run"
CONF = STATE / "supervisor" / "supervisord.conf"
LIB = REPO / "deploy" / "local" / "lib.sh"
SUPERVISOR_SH = REPO / "deploy" / "local" / "services" / "supervisor.sh"
GATEWAY = f"http://127.0.0.1:{LOCAL_STACK.gateway_metrics_port}"


def wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(0.2)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def process_start_time(base_url: str) -> float:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "process_start_time_seconds":
            return float(family.samples[0].value)
    pytest.fail("no process_start_time_seconds in the gateway's /metrics")


def status_line(service: str) -> str:
    out = subprocess.run(
        [str(STACK_SCRIPT), "status"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    lines = [line for line in out.splitlines() if line.split()[:1] == [service]]
    assert len(lines) == 1, out
    return lines[0]


def restarts(line: str) -> int:
    m = re.search(r"restarts (\d+)", line)
    assert m, line
    return int(m.group(1))


def parent_of(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def supervisord(stack: Stack) -> int:
    """The pid of the stack's supervisord."""
    pid = read_pid(RUN / "supervisord.pid")
    if pid is None or not Path(f"/proc/{pid}").exists():
        pytest.fail("the stack's services are not supervised: run `make up`")
    return pid


def test_every_service_runs_under_the_supervisor_with_its_restart_policy(
    supervisord: int,
) -> None:
    conf = configparser.RawConfigParser()
    conf.read(CONF)
    services = conf["group:nakhon"]["programs"].split(",")
    # gateway-2, processor-3 ... on a stack of several (NAKHON_GATEWAYS, NAKHON_PROCESSORS).
    commands = [name.split("-")[0] for name in services]
    assert sorted(set(commands)) == ["api", "gateway", "maintain", "processor"]
    for name, command in zip(services, commands, strict=True):
        program = conf[f"program:{name}"]
        assert program["command"].endswith(f"/.venv/bin/nakhon {command}"), name
        assert program["autorestart"] == "true"
        assert int(program["startsecs"]) > 0 and int(program["startretries"]) > 0
        assert (program["stopsignal"], program["stopwaitsecs"]) == ("TERM", "30")
        assert program["stdout_logfile"] == str(STATE / "logs" / f"nakhon-{name}.log")
        stack_env = f'NAKHON_ENV_FILE="{STATE}/secrets/local.env'
        if len(services) == 4:  # one of each: the stack's generated settings, nothing else
            assert program["environment"] == stack_env + '"', name
        else:  # several: those first (a gateway's own login, a metrics port after them)
            assert program["environment"].startswith(stack_env), name
        pid = read_pid(RUN / f"nakhon-{name}.pid")
        assert pid is not None, name
        assert parent_of(pid) == supervisord, f"{name} (pid {pid}) is not supervisord's"


def test_a_killed_gateway_is_started_again_and_the_restart_counted(supervisord: int) -> None:
    wait_for("the stack's gateway is ready", lambda: answers(f"{GATEWAY}/readyz"), 60)
    before = restarts(status_line("gateway"))
    started_before = process_start_time(GATEWAY)
    old = read_pid(RUN / "nakhon-gateway.pid")
    assert old is not None and parent_of(old) == supervisord

    os.kill(old, signal.SIGKILL)

    # supervisord starts a crashed service again at once (the backoff is only
    # for one that exits during its first seconds).
    wait_for(
        "a new gateway process",
        lambda: read_pid(RUN / "nakhon-gateway.pid") not in (None, old),
        15,
    )
    new = read_pid(RUN / "nakhon-gateway.pid")
    assert new is not None and parent_of(new) == supervisord
    wait_for("the new gateway is ready", lambda: answers(f"{GATEWAY}/readyz"), 60)
    assert process_start_time(GATEWAY) > started_before
    line = status_line("gateway")
    assert restarts(line) == before + 1, line
    assert f"pid {new}," in line, line
    log = (STATE / "logs" / "supervisord.log").read_text()
    assert "exited: gateway (terminated by SIGKILL; not expected)" in log


@pytest.fixture
def own_supervisord(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Runs bash with lib.sh and supervisor.sh sourced, on a state directory of its own."""

    def run(script: str) -> str:
        done = subprocess.run(
            ["bash", "-c", f'source "{LIB}"; source "{SUPERVISOR_SH}"; {script}'],
            env={**os.environ, "NAKHON_STATE_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    yield run
    run("if supervisor_alive; then supervisor_shutdown; fi")


def test_a_program_failing_at_start_is_retried_with_a_backoff_then_given_up(
    own_supervisord: Callable[[str], str], tmp_path: Path
) -> None:
    own_supervisord(
        "supervisor_write_config sandbox "
        "\"$(supervisor_program flaky flaky '' /bin/sh -c 'echo failing; exit 3')\""
        " && supervisor_launch"
    )

    def state() -> str:
        return own_supervisord("supervisor_ctl status sandbox:flaky || true").split()[1]

    wait_for("supervisord gives the program up", lambda: state() == "FATAL", 60)
    retries = int(own_supervisord("echo $SUPERVISOR_START_RETRIES"))
    assert own_supervisord("supervisor_starts flaky").strip() == str(retries + 1)
    # Each retry waits a second longer than the one before.
    log = (tmp_path / "logs" / "supervisord.log").read_text()
    spawned = [
        time.mktime(time.strptime(m, "%Y-%m-%d %H:%M:%S"))
        for m in re.findall(r"^(\S+ \S+),\d+ INFO spawned: 'flaky'", log, re.M)
    ]
    assert len(spawned) == retries + 1
    gaps = [b - a for a, b in itertools.pairwise(spawned)]
    assert gaps[-1] >= retries - 1, gaps
    assert "gave up: flaky entered FATAL state" in log
    assert (tmp_path / "logs" / "flaky.log").read_text().count("failing") == retries + 1
