#!/usr/bin/env bash
# Creates .venv with exactly the pinned, hash-checked packages of
# requirements/dev.lock (runtime + dev tools, see `make lock`), then Nakhon itself
# (editable, built offline by the locked setuptools). Re-run when the lock
# changes. Needs Python >= 3.11 (Debian 12's python3 is 3.11).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || { apt_install python3; PY=python3; }
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "find Python" "" "Python >= 3.11 is needed; $PY is $("$PY" -V 2>&1)"
if [[ ! -x "$REPO/.venv/bin/python" ]]; then
  say "creating the virtualenv .venv"
  "$PY" -m venv "$REPO/.venv" >"$LOGS/venv.log" 2>&1 || {
    [[ $EUID -eq 0 ]] && apt_install python3-venv
    rm -rf "$REPO/.venv"
    "$PY" -m venv "$REPO/.venv" >"$LOGS/venv.log" 2>&1 || die "python3 -m venv" "$LOGS/venv.log" "could not create .venv"
  }
fi
say "installing Nakhon and its dependencies (requirements/dev.lock) into .venv"
# pip itself is one of the locked packages: no unpinned `pip install --upgrade pip`.
"$REPO/.venv/bin/python" -m pip install -q --require-hashes -r "$REPO/requirements/dev.lock" \
  >"$LOGS/pip.log" 2>&1 \
  || die "pip install -r requirements/dev.lock" "$LOGS/pip.log" \
    "could not install the locked dependencies (pyproject.toml edited? run make lock)"
"$REPO/.venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$REPO" \
  >>"$LOGS/pip.log" 2>&1 \
  || die "pip install -e ." "$LOGS/pip.log" "could not install Nakhon itself into .venv"
touch "$REPO/.venv/.installed"
