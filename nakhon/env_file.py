"""``NAKHON_*=value`` files holding generated credentials (the local stack's ``local.env``).

The same format pydantic-settings reads (``load_settings``) and systemd's
``EnvironmentFile=`` accepts. Written atomically, readable by its owner only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
_PLAIN = re.compile(r"^[A-Za-z0-9_.:/@+=-]*$")


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of ``path`` ({} if it does not exist). Only the format we write is read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    out = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m:
            value = m.group(2)
            if len(value) >= 2 and value[0] == value[-1] == "'":
                value = value[1:-1]
            out[m.group(1)] = value
    return out


def update_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Set ``values`` in ``path``, keeping its other lines; the file ends up mode 600."""
    for key, value in values.items():
        if not _LINE.match(f"{key}=x") or "'" in value or "\n" in value:
            raise ValueError(f"{key}: a value for an env file may not hold quotes or newlines")
    merged = read_env_file(path) | dict(values)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# Generated credentials: keep this file secret (mode 600). Never commit it.\n")
        for key, value in sorted(merged.items()):
            f.write(f"{key}={value if _PLAIN.match(value) else repr_single(value)}\n")
    tmp.replace(path)


def repr_single(value: str) -> str:
    return f"'{value}'"
