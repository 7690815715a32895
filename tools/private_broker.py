"""A Mosquitto of a test's own, configured exactly as ``make up`` configures the stack's.

Tests that restart or kill the broker must not touch the one ``make up`` runs
(every other test and service uses it). :class:`PrivateBroker` takes the
stack's generated ``mosquitto.conf`` (persistence, autosave, queue limits,
dynamic security, everything closed by default), keeps one plaintext listener
on a free port, and gives it a data folder and a credentials file of its own,
made by ``nakhon broker init`` as ``make up`` makes the stack's.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from nakhon.env_file import read_env_file
from nakhon.identity.dynsec import DynsecAdmin
from nakhon.mqtt_connection import MqttEndpoint
from tools.sandbox import REPO, SandboxError, free_port, wait_until

MOSQUITTO = "/usr/sbin/mosquitto"
#: What ``make up`` wrote for the stack's broker.
STACK_CONF = REPO / ".nakhon" / "mosquitto" / "mosquitto.conf"
#: Lines of the stack's configuration that belong to its listeners and files.
_REPLACED = (
    "listener",
    "cafile",
    "certfile",
    "keyfile",
    "require_certificate",
    "use_identity_as_username",
    "plugin_opt_config_file",
    "persistence_location",
    "log_dest",
)


class PrivateBroker:
    """``start``, ``terminate`` (SIGTERM, a graceful stop), ``kill`` (SIGKILL), ``restart``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="nakhon-broker-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._prepare()
        env = read_env_file(self.env_file)
        self.admin_password = env["NAKHON_MQTT_ADMIN_PASSWORD"]

    @property
    def env_file(self) -> Path:
        return self.folder / "credentials.env"

    @property
    def log_path(self) -> Path:
        return self.folder / "mosquitto.log"

    def _prepare(self) -> None:
        if not STACK_CONF.exists():
            raise SandboxError(f"no {STACK_CONF}: run make up first")
        dynsec = self.folder / "dynsec" / "dynamic-security.json"
        init = ["broker", "init", "--dynsec-file", str(dynsec), "--env-file", str(self.env_file)]
        subprocess.run(  # noqa: S603  (our own command line)
            [sys.executable, "-m", "nakhon.cli", *init],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
        (self.folder / "data").mkdir()
        kept = [
            line
            for line in STACK_CONF.read_text().splitlines()
            if line.split(" ", 1)[0] not in _REPLACED
        ]
        kept += [
            f"listener {self.port} 127.0.0.1",
            f"plugin_opt_config_file {dynsec}",
            f"persistence_location {self.folder / 'data'}/",
            f"log_dest file {self.log_path}",
        ]
        (self.folder / "mosquitto.conf").write_text("\n".join(kept) + "\n")
        # The stack's configuration has the broker drop to the mosquitto user.
        user = pwd.getpwnam("mosquitto")
        for path in (self.folder, self.folder / "data", dynsec.parent, dynsec):
            os.chown(path, user.pw_uid, user.pw_gid)
        self.log_path.touch()
        os.chown(self.log_path, user.pw_uid, user.pw_gid)
        self.folder.chmod(0o755)

    def start(self) -> None:
        self.proc = subprocess.Popen(  # noqa: S603  (fixed command line)
            [MOSQUITTO, "-c", str(self.folder / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, 20, f"the private broker on :{self.port} ({self.log_path})")

    def terminate(self) -> None:
        """SIGTERM: Mosquitto saves its sessions and queues to its persistence file and exits."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: what was not saved since the last autosave is gone."""
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        self.terminate()
        self.start()

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)
        self.proc = None

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise SandboxError(f"the private broker exited; see {self.log_path}")
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def admin(self) -> DynsecAdmin:
        """An admin connection to this broker (a context manager, as ``broker_admin``)."""
        return DynsecAdmin(MqttEndpoint(port=self.port), self.admin_password)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PrivateBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
