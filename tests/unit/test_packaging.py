"""The wheel ships the product and nothing else; the locks pin what pyproject.toml asks for.

The wheel is built offline by the build backend installed from
requirements/dev.lock (setuptools), from a copy of the files the package finder
sees, tools/ and tests/ included, so that excluding them is really tested.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "requirements"

# `name==version` at the start of a line of a uv / pip-tools lock (PEP 503 names).
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.M)

# The harnesses (tools/sandbox.py, tools/bench/, the API latency bench) stay out.
HARNESS = re.compile(r"sandbox|bench", re.I)


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    source = tmp_path_factory.mktemp("source")
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for folder in ("nakhon", "tools", "tests"):
        shutil.copytree(REPO / folder, source / folder, ignore=skip)
    out = tmp_path_factory.mktemp("wheel")
    # In a child process: the backend's deprecation warnings are not this test's
    # (pytest turns warnings into errors), and its output stays out of the report.
    build = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))",
            str(out),
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    hint = "\n(is the virtualenv installed from requirements/dev.lock? make venv)"
    assert build.returncode == 0, build.stdout + build.stderr + hint
    wheel = out / build.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_the_cli_and_every_migration(wheel_files: list[str]) -> None:
    assert "nakhon/cli.py" in wheel_files
    migrations = {
        f"nakhon/storage/migrations/{sql.name}"
        for sql in (REPO / "nakhon" / "storage" / "migrations").glob("*.sql")
    }
    assert migrations, "no migrations found in the checkout"
    assert migrations <= set(wheel_files)


def test_the_wheel_holds_no_tools_tests_or_harnesses(wheel_files: list[str]) -> None:
    assert not [f for f in wheel_files if f.startswith(("tools/", "tests/"))]
    assert not [f for f in wheel_files if HARNESS.search(f)]
    top_level = {f.split("/", 1)[0] for f in wheel_files}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"nakhon"}


def _pins(lock: str) -> dict[str, Version]:
    text = (LOCKS / lock).read_text()
    return {canonicalize_name(name): Version(version) for name, version in PIN.findall(text)}


def _pyproject_requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    return [Requirement(line) for line in wanted]


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("dev.lock", ("dev",)), ("runtime.lock", ())],
)
def test_the_lock_pins_every_pyproject_dependency(lock: str, extras: tuple[str, ...]) -> None:
    pins = _pins(lock)
    missing = [
        str(r) for r in _pyproject_requirements(*extras) if canonicalize_name(r.name) not in pins
    ]
    assert not missing, f"not in requirements/{lock} (run make lock): {missing}"
    outside = [
        f"{r} (locked {pins[canonicalize_name(r.name)]})"
        for r in _pyproject_requirements(*extras)
        if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not outside, (
        f"requirements/{lock} is older than pyproject.toml (run make lock): {outside}"
    )


def test_the_image_runs_what_the_tests_ran() -> None:
    dev, runtime = _pins("dev.lock"), _pins("runtime.lock")
    differ = {
        name: (version, dev.get(name))
        for name, version in runtime.items()
        if dev.get(name) != version
    }
    assert not differ, f"runtime.lock and dev.lock disagree (run make lock): {differ}"


def test_the_dev_lock_pins_the_installers() -> None:
    tools = (LOCKS / "tools.in").read_text()
    names = [
        Requirement(line).name for line in tools.splitlines() if line and not line.startswith("#")
    ]
    assert set(map(canonicalize_name, names)) <= set(_pins("dev.lock"))
