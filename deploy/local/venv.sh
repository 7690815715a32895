#!/usr/bin/env bash
# Creates .venv with Nakhon and its dev tools installed (editable); re-run when
# pyproject.toml changes. Needs Python >= 3.11 (Debian 12's python3 is 3.11).
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
say "installing Nakhon and its dependencies into .venv"
"$REPO/.venv/bin/python" -m pip install -q --upgrade pip >"$LOGS/pip.log" 2>&1 || true
"$REPO/.venv/bin/python" -m pip install -q -e "$REPO[dev]" >>"$LOGS/pip.log" 2>&1 \
  || die "pip install -e .[dev]" "$LOGS/pip.log" "could not install the dependencies"
touch "$REPO/.venv/.installed"
