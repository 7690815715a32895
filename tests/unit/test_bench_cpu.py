"""The bench's CPU meter (tools/bench/cpu.py) against processes that burn a known amount."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.bench.cpu import (
    CpuMeter,
    CpuSample,
    cpu_costs,
    idle_rates,
    process_times,
    stack_pids,
    tree_cpu_seconds,
)

#: CPU seconds each busy process burns; it then prints its own process_time() and waits.
BURN_S = 0.3
#: Two clock ticks of slack either side (a tick is 10 ms at the usual 100 Hz).
TOLERANCE_S = 0.03

_BURN = f"""
import time
start = time.process_time()
while time.process_time() - start < {BURN_S}:
    pass
"""
#: Burns, reports its process_time(), then blocks until its stdin closes.
BUSY = _BURN + "print(time.process_time(), flush=True)\nimport sys\nsys.stdin.read()\n"
#: Runs BUSY-like children: one it waits for (reaped), one it leaves running.
PARENT = f"""
import subprocess, sys
burn = {_BURN!r}
subprocess.run([sys.executable, "-c", burn], check=True)
alive = subprocess.Popen(
    [sys.executable, "-c", burn + "print('burnt', flush=True)\\nimport sys\\nsys.stdin.read()"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
)
assert alive.stdout.readline() == "burnt\\n"
print("ready", flush=True)
sys.stdin.read()
alive.stdin.close()
alive.wait()
"""


def _spawn(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


@pytest.fixture
def busy() -> Iterator[tuple[subprocess.Popen[str], float]]:
    """A child that burnt BURN_S of CPU and is now idle; with its own count of it."""
    proc = _spawn(BUSY)
    assert proc.stdout is not None
    reported = float(proc.stdout.readline())
    yield proc, reported
    _finish(proc)


def _finish(proc: subprocess.Popen[str]) -> None:
    """Close its stdin (it exits), read what is left, close its pipes."""
    proc.communicate(timeout=10)


def test_a_busy_process_is_measured_as_it_measures_itself(
    busy: tuple[subprocess.Popen[str], float],
) -> None:
    proc, reported = busy
    times = process_times(proc.pid)
    assert reported >= BURN_S
    assert times.own_s == pytest.approx(reported, abs=TOLERANCE_S)
    assert times.reaped_children_s == 0
    assert tree_cpu_seconds(proc.pid) == pytest.approx(reported, abs=TOLERANCE_S)


def test_an_idle_process_adds_nothing_between_two_samples(
    busy: tuple[subprocess.Popen[str], float],
) -> None:
    proc, _ = busy
    meter = CpuMeter({"busy": proc.pid})
    before = meter.sample()
    after = meter.sample()
    assert after.at >= before.at
    assert after.cpu_s["busy"] - before.cpu_s["busy"] <= TOLERANCE_S


def test_a_tree_counts_children_reaped_and_children_alive() -> None:
    """As a postmaster's: backends that ended (reaped) and backends that still run."""
    proc = _spawn(PARENT)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        own = process_times(proc.pid)
        # The parent itself only started two interpreters.
        assert own.reaped_children_s >= BURN_S - TOLERANCE_S
        assert tree_cpu_seconds(proc.pid) >= own.own_s + 2 * BURN_S - 2 * TOLERANCE_S
    finally:
        _finish(proc)


def test_a_process_that_is_gone_raises_lookup_error() -> None:
    proc = _spawn("pass")
    proc.communicate()
    with pytest.raises(ProcessLookupError):
        process_times(proc.pid)


def test_costs_per_message_and_reading_and_their_total() -> None:
    costs = cpu_costs(
        CpuSample(100.0, {"gateway": 10.0, "processor": 20.0}),
        CpuSample(110.0, {"gateway": 10.5, "processor": 21.5}),
        messages=1000,
        readings=5000,
    )
    assert costs["gateway"].us_per_message == 500.0
    assert costs["processor"].us_per_reading == 300.0
    assert costs["total"].cpu_s == 2.0
    assert costs["total"].us_per_message == 2000.0
    assert costs["total"].us_per_reading == 400.0
    assert costs["total"].us_per_message_above_idle is None


def test_costs_above_the_idle_floor() -> None:
    idle = idle_rates(CpuSample(0.0, {"kafka": 1.0}), CpuSample(4.0, {"kafka": 1.2}))
    assert idle == {"kafka": pytest.approx(0.05)}
    # 10 s at 0.05 CPU-s/s idle is 0.5 s of the 1.5 s spent: 1.0 s for 1000 messages.
    costs = cpu_costs(
        CpuSample(50.0, {"kafka": 2.0}), CpuSample(60.0, {"kafka": 3.5}), 1000, 5000, idle
    )
    assert costs["kafka"].us_per_message == 1500.0
    assert costs["kafka"].us_per_message_above_idle == pytest.approx(1000.0)
    assert costs["total"].us_per_message_above_idle == pytest.approx(1000.0)


def test_stack_pids_keeps_the_living(tmp_path: Path) -> None:
    (tmp_path / "mosquitto.pid").write_text(f"{process_times(1).pid}\n")
    dead = _spawn("pass")
    dead.communicate()
    (tmp_path / "kafka.pid").write_text(f"{dead.pid}\n")
    (tmp_path / "postgres.pid").write_text("garbage\n")
    assert stack_pids(tmp_path, ["mosquitto", "kafka", "postgres", "absent"]) == {"mosquitto": 1}
