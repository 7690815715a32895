"""How the benchmark's MQTT clients log in: with the credentials a namespace was given.

Mosquitto's C clients read extra options from ``$XDG_CONFIG_HOME/mosquitto_pub``
(and ``mosquitto_sub``), one option per line; the password goes there, in a
private temporary folder, so it never appears on a command line (``ps`` shows
command lines to every user of the machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nakhon.identity.provision import Credentials
from nakhon.local_stack import LOCAL_STACK
from tools.sandbox import free_port, wait_until

MOSQUITTO = "/usr/sbin/mosquitto"


@dataclass(frozen=True, slots=True)
class Broker:
    """Where the C clients connect, and as whom."""

    port: int = LOCAL_STACK.mqtt_port
    host: str = "127.0.0.1"
    ca_file: Path | None = None
    publisher: Credentials | None = None
    subscriber: Credentials | None = None
    #: The subscriber's shared-subscription group, when its gateway role reads through one.
    share_group: str | None = None


@contextmanager
def c_client_env(broker: Broker) -> Iterator[dict[str, str]]:
    """The environment for ``mosquitto_pub``/``_sub`` logging in as ``broker`` says."""
    home = Path(tempfile.mkdtemp(prefix="nakhon-bench-"))
    home.chmod(0o700)
    try:
        for program, creds in (
            ("mosquitto_pub", broker.publisher),
            ("mosquitto_sub", broker.subscriber),
        ):
            lines = [f"-h {broker.host}", f"-p {broker.port}"]
            if broker.ca_file is not None:
                lines.append(f"--cafile {broker.ca_file}")
            if creds is not None:
                lines += [f"-u {creds.username}", f"-P {creds.password}"]
                if creds.clientid:
                    lines.append(f"-i {creds.clientid}")
            path = home / program
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(lines) + "\n")
        yield {**os.environ, "XDG_CONFIG_HOME": str(home)}
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def open_broker() -> Iterator[Broker]:
    """A private Mosquitto with anonymous access, to measure what authentication costs."""
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="nakhon-open-broker-"))
    folder.chmod(0o755)
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\n"
        "max_queued_messages 1000000\nlog_dest none\n"
    )
    conf.chmod(0o644)
    proc = subprocess.Popen(  # noqa: S603  (fixed command line)
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: _answers(port), 10, f"the open broker on :{port}")
        yield Broker(port=port)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _answers(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        ok = s.connect_ex(("127.0.0.1", port)) == 0
    if not ok:
        time.sleep(0.05)
    return ok
