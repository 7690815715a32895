"""The stream a chaos row publishes: SenML packs of 5 readings from many sensors.

Every sensor is one ``mosquitto_pub -q 1 -l`` (Mosquitto's C client, logged in
as the namespace's publishing bridge through its config file), fed line by
line at an even pace over the publishing window. With ``-d`` it prints each
PUBACK it receives: a pack is *acknowledged* when its publisher got the
PUBACK for it (a publisher's message ids count its lines from 1). A publisher
that was cut off reconnects by itself and sends again what was not
acknowledged; what is still not acknowledged when its input ends is sent
again by a fresh publisher, as a device retries, until every pack is
acknowledged or the rounds run out.

Each pack is identified by its sensor and its time: pack ``q`` of a sensor is
dated ``base + q`` milliseconds, so a row's time gives back its pack.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from tools.bench.mqtt_logins import Broker, c_client_env
from tools.sandbox import PipelineNamespace

READINGS_PER_PACK = 5
_METRICS = ("pm2_5", "pm10", "temperature", "humidity", "noise_laeq")
#: A registered city (migrations seed it).
CITY = "khon_kaen"
MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"
_PUBACK = re.compile(rb"received PUBACK \(Mid: (\d+)")

#: (sensor index, pack number of that sensor)
PackId = tuple[int, int]


@dataclass
class Stream:
    """``readings`` readings as packs of 5, spread over ``sensors`` sensors of ``ns``."""

    ns: PipelineNamespace
    readings: int
    sensors: int = 200
    #: The packs' times start an hour ago: inside the processor's backfill horizon.
    base_ms: int = field(default_factory=lambda: int((time.time() - 3600) * 1000))
    #: When each pack's line first went to its publisher (time.monotonic()).
    sent_at: dict[PackId, float] = field(default_factory=dict)
    acknowledged: set[PackId] = field(default_factory=set)
    #: Packs sent again by a fresh publisher, after the first one ended without their PUBACK.
    resent: int = 0

    @property
    def packs(self) -> int:
        return self.readings // READINGS_PER_PACK

    def sensor_id(self, k: int) -> str:
        return f"{self.ns.name}-c{k:03d}"

    @property
    def sensor_prefix(self) -> str:
        return f"{self.ns.name}-c"

    def pack_ids(self) -> list[PackId]:
        """Every pack, in publishing order: the sensors take turns."""
        return [(j % self.sensors, j // self.sensors) for j in range(self.packs)]

    def line(self, pack: PackId) -> bytes:
        k, q = pack
        sensor = self.sensor_id(k)
        records: list[dict[str, object]] = [
            {"bn": f"{sensor}:", "bt": (self.base_ms + q) / 1000, "n": _METRICS[0], "v": 20.0}
        ]
        records += [{"n": m, "v": float(20 + q % 50)} for m in _METRICS[1:]]
        return orjson.dumps(records) + b"\n"

    def pack_of_row(self, sensor_id: str, epoch_ms: int) -> PackId:
        return int(sensor_id.removeprefix(self.sensor_prefix)), epoch_ms - self.base_ms

    def publish(self, port: int, seconds: float) -> None:
        """Feed every pack to its sensor's publisher, evenly over ``seconds``; wait for them."""
        broker = Broker(port=port, publisher=self.ns.publisher_credentials)
        folder = Path(tempfile.mkdtemp(prefix="nakhon-chaos-"))
        try:
            with c_client_env(broker) as env:
                procs = [self._publisher(k, env, folder / f"{k}.out") for k in range(self.sensors)]
                lines: list[list[PackId]] = [[] for _ in range(self.sensors)]
                step = seconds / max(1, self.packs)
                started = time.monotonic()
                for j, pack in enumerate(self.pack_ids()):
                    ahead = started + j * step - time.monotonic()
                    if ahead > 0.001:
                        time.sleep(ahead)
                    k = pack[0]
                    self.sent_at[pack] = time.monotonic()
                    lines[k].append(pack)
                    _write(procs[k], self.line(pack))
                for proc in procs:
                    _close(proc)
                for k, proc in enumerate(procs):
                    self._reap(proc, folder / f"{k}.out", lines[k])
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def resend_unacknowledged(self, port: int, rounds: int = 5) -> None:
        """Send again, from fresh publishers, each pack still without its PUBACK."""
        broker = Broker(port=port, publisher=self.ns.publisher_credentials)
        folder = Path(tempfile.mkdtemp(prefix="nakhon-chaos-"))
        try:
            with c_client_env(broker) as env:
                for _ in range(rounds):
                    missing: dict[int, list[PackId]] = {}
                    for pack in self.pack_ids():
                        if pack not in self.acknowledged:
                            missing.setdefault(pack[0], []).append(pack)
                    if not missing:
                        return
                    self.resent += sum(len(v) for v in missing.values())
                    procs = {k: self._publisher(k, env, folder / f"r{k}.out") for k in missing}
                    for k, proc in procs.items():
                        _write(proc, b"".join(self.line(p) for p in missing[k]))
                        _close(proc)
                    for k, proc in procs.items():
                        self._reap(proc, folder / f"r{k}.out", missing[k])
                    time.sleep(1)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _publisher(self, k: int, env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
        topic = self.ns.topic(CITY, self.sensor_id(k), "senml")
        with out.open("wb") as f:
            return subprocess.Popen(  # noqa: S603  (fixed command line)
                [MOSQUITTO_PUB, "-d", "-q", "1", "-l", "-t", topic],
                stdin=subprocess.PIPE,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
                bufsize=0,
            )

    def _reap(self, proc: subprocess.Popen[bytes], out: Path, packs: list[PackId]) -> None:
        """Wait for a publisher (at most 2 minutes) and note the packs it had acknowledged."""
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for mid in {int(m) for m in _PUBACK.findall(out.read_bytes())}:
            if 1 <= mid <= len(packs):  # one publisher sends well under 65,535 lines
                self.acknowledged.add(packs[mid - 1])


def _write(proc: subprocess.Popen[bytes], data: bytes) -> None:
    """To a publisher's input; one that has exited leaves its packs unacknowledged."""
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(data)


def _close(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
