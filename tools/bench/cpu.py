"""CPU time the pipeline's processes spent, read from ``/proc``.

A component is a process and everything it forked: PostgreSQL is one
postmaster and a backend per connection, and backends come and go (a test's
short connection, a parallel worker). The kernel keeps two sums per process in
``/proc/<pid>/stat``: ``utime + stime``, its own CPU, and ``cutime +
cstime``, that of the children it has reaped. A component's CPU is its root's
own and reaped, plus the own and reaped of every descendant still running; the
difference between two readings is what it spent in between, whichever
backends ended meanwhile (the postmaster reaps its backends, so their time
moves from the live sum to the reaped one).

Times are in clock ticks (``SC_CLK_TCK``, usually 100 a second): over a phase
of several seconds the error is a tick or two per process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")

# Fields of /proc/<pid>/stat after the ")" that ends the command name
# (proc(5) numbers them from 1; the state, field 3, is the first here).
_PPID, _UTIME, _STIME, _CUTIME, _CSTIME = 4 - 3, 14 - 3, 15 - 3, 16 - 3, 17 - 3


@dataclass(frozen=True, slots=True)
class ProcessTimes:
    """One process's CPU seconds: its own, and those of the children it reaped."""

    pid: int
    ppid: int
    own_s: float
    reaped_children_s: float


def process_times(pid: int, proc: Path = PROC) -> ProcessTimes:
    """``/proc/<pid>/stat`` of one process; ``ProcessLookupError`` when it is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessLookupError(pid) from exc
    # The command name is in parentheses and may hold spaces or ")": split after the last.
    fields = text[text.rindex(")") + 2 :].split()
    ticks = CLOCK_TICKS_PER_S
    return ProcessTimes(
        pid=pid,
        ppid=int(fields[_PPID]),
        own_s=(int(fields[_UTIME]) + int(fields[_STIME])) / ticks,
        reaped_children_s=(int(fields[_CUTIME]) + int(fields[_CSTIME])) / ticks,
    )


def _all_processes(proc: Path) -> Iterable[ProcessTimes]:
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                yield process_times(int(entry.name), proc)
            except ProcessLookupError:  # ended while we listed
                continue


def tree_cpu_seconds(pid: int, proc: Path = PROC) -> float:
    """CPU seconds of ``pid`` and its descendants, living and reaped, so far."""
    root = process_times(pid, proc)
    children: dict[int, list[ProcessTimes]] = {}
    for p in _all_processes(proc):
        children.setdefault(p.ppid, []).append(p)
    total = 0.0
    stack = [root]
    while stack:
        p = stack.pop()
        total += p.own_s + p.reaped_children_s
        stack.extend(children.get(p.pid, ()))
    return total


@dataclass(frozen=True, slots=True)
class CpuSample:
    """The CPU seconds so far of each component, and when they were read (monotonic)."""

    at: float
    cpu_s: dict[str, float]


@dataclass(frozen=True, slots=True)
class CpuCost:
    """What one component spent between two samples, per message and per reading."""

    cpu_s: float
    us_per_message: float
    us_per_reading: float
    #: Per message, less what the component spends when nothing is published (its idle rate).
    us_per_message_above_idle: float | None = None


class CpuMeter:
    """Reads the CPU of named process trees; two samples give each one's cost in between."""

    def __init__(self, components: Mapping[str, int]) -> None:
        self.components = dict(components)
        #: CPU seconds per second of each component while nothing is published, once measured.
        self.idle: dict[str, float] | None = None

    def sample(self) -> CpuSample:
        return CpuSample(
            at=time.monotonic(),
            cpu_s={name: tree_cpu_seconds(pid) for name, pid in self.components.items()},
        )

    def costs(
        self, before: CpuSample, after: CpuSample, messages: int, readings: int
    ) -> dict[str, CpuCost]:
        """:func:`cpu_costs` between two samples, above the idle floor when it was measured."""
        return cpu_costs(before, after, messages, readings, self.idle)


def _spent(before: CpuSample, after: CpuSample) -> dict[str, float]:
    return {
        name: max(0.0, after.cpu_s[name] - s)
        for name, s in before.cpu_s.items()
        if name in after.cpu_s
    }


def idle_rates(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """CPU seconds per second of each component between two samples (taken while idle)."""
    seconds = after.at - before.at
    return {name: s / seconds for name, s in _spent(before, after).items()}


def cpu_costs(
    before: CpuSample,
    after: CpuSample,
    messages: int,
    readings: int,
    idle: Mapping[str, float] | None = None,
) -> dict[str, CpuCost]:
    """Each component's cost between two samples, and their ``total``.

    With ``idle`` (CPU seconds per second when nothing is published, from
    :func:`idle_rates`), also the cost per message above that floor.
    """
    spent = _spent(before, after)
    spent["total"] = sum(spent.values())
    above: dict[str, float] | None = None
    if idle is not None:
        seconds = after.at - before.at
        above = {n: s - idle.get(n, 0.0) * seconds for n, s in spent.items() if n != "total"}
        above["total"] = sum(above.values())

    def per(value: float, count: int) -> float:
        return round(value * 1e6 / count, 1) if count else 0.0

    return {
        name: CpuCost(
            cpu_s=round(s, 2),
            us_per_message=per(s, messages),
            us_per_reading=per(s, readings),
            us_per_message_above_idle=per(above[name], messages) if above is not None else None,
        )
        for name, s in spent.items()
    }


def stack_pids(run_dir: Path, names: Iterable[str]) -> dict[str, int]:
    """The pids ``make up`` wrote as ``<run_dir>/<name>.pid``, for those alive."""
    found: dict[str, int] = {}
    for name in names:
        path = run_dir / f"{name}.pid"
        try:
            pid = int(path.read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            continue
        if (PROC / str(pid)).exists():
            found[name] = pid
    return found
