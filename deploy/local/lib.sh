# Shared by the local-stack scripts: paths, messages, readiness waits.
# Sourced, not run. Every service keeps its data, logs and pid under $STATE.

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEPLOY="$REPO/deploy/local"
STATE="${NAKHON_STATE_DIR:-$REPO/.nakhon}"
LOGS="$STATE/logs"
RUN="$STATE/run"
mkdir -p "$LOGS" "$RUN"
# Generated credentials (NAKHON_*=... lines, mode 600), read by the nakhon
# commands and services (nakhon/config.py, load_settings). Never committed.
SECRETS="$STATE/secrets"
ENV_FILE="$SECRETS/local.env"

# The stack's ports, defined once (the settings' defaults read the same file).
source "$REPO/nakhon/local_stack.env"

# The stack's size as the last `make up` set it, kept until set again (so a
# later `make up`, `make test` or `make status` sees the same stack):
# NAKHON_KAFKA_BROKERS, NAKHON_GATEWAYS, NAKHON_PROCESSORS. The environment wins.
SCALE_FILE="$STATE/scale.env"
SCALE_VARS=(NAKHON_KAFKA_BROKERS NAKHON_GATEWAYS NAKHON_PROCESSORS)
if [[ -f "$SCALE_FILE" ]]; then
  while IFS='=' read -r key value; do
    [[ " ${SCALE_VARS[*]} " == *" $key "* && "$value" =~ ^[0-9]+$ ]] || continue
    [[ -n "${!key:-}" ]] || export "$key=$value"
  done < "$SCALE_FILE"
fi

# scale_save: remember this `make up`'s size (what the services' scripts chose).
scale_save() {
  printf '%s\n' "# Written by make up (deploy/local/lib.sh); set the variables to change the stack's size." \
    "NAKHON_KAFKA_BROKERS=$KAFKA_BROKERS" "NAKHON_GATEWAYS=$NAKHON_GATEWAY_COUNT" \
    "NAKHON_PROCESSORS=$NAKHON_PROCESSOR_COUNT" > "$SCALE_FILE"
}

PG_VERSION=15
PG_BIN="/usr/lib/postgresql/$PG_VERSION/bin"

say()  { printf '\033[1m[nakhon]\033[0m %s\n' "$*"; }
warn() { printf '\033[33m[nakhon]\033[0m %s\n' "$*" >&2; }

# die STEP LOGFILE MESSAGE: stop with a message naming the step and the log to read.
die() {
  local step="$1" log="$2"; shift 2
  printf '\033[31m[nakhon] %s failed:\033[0m %s\n' "$step" "$*" >&2
  if [[ -n "$log" && -f "$log" ]]; then
    printf '  read %s; its last lines:\n' "$log" >&2
    tail -n 15 "$log" | sed 's/^/    /' >&2
  fi
  exit 1
}

# wait_ready NAME TIMEOUT_S LOG CMD...: poll CMD until it succeeds; die if the
# service's process exits first or the time runs out. Never a fixed sleep.
wait_ready() {
  local name="$1" timeout="$2" log="$3"; shift 3
  local deadline=$((SECONDS + timeout))
  local pid
  pid="$(cat "$RUN/$name.pid" 2>/dev/null)"
  until "$@" >/dev/null 2>&1; do
    # kill -0, not pid_alive: just after the fork, before its exec, the child
    # still has the stack script's command line and would not look like ours.
    kill -0 "$pid" 2>/dev/null || die "start $name" "$log" "the process exited"
    (( SECONDS < deadline )) || die "start $name" "$log" "not ready after ${timeout}s"
    sleep 0.2
  done
}

# service_dir NAME USER: the folder for NAME's data, one USER (the service's own
# account) can reach. That is $STATE/NAME when USER can traverse the checkout's
# path; otherwise (a checkout under /root, mode 700, say) it is
# /var/lib/nakhon/<checkout id>/NAME, with $STATE/NAME a symlink to it, so the
# data is still found from the checkout. Call it after the user exists.
service_dir() {
  local name="$1" user="$2" dir="$STATE/$1"
  if [[ -L "$dir" ]]; then
    readlink -f "$dir"
  elif runuser -u "$user" -- test -x "$STATE" 2>/dev/null; then
    mkdir -p "$dir"; echo "$dir"
  else
    local alt
    alt="$RELOCATED/$name"
    mkdir -p "$alt"
    [[ -d "$dir" ]] && rmdir "$dir" 2>/dev/null
    ln -sfn "$alt" "$dir"
    echo "$alt"
  fi
}

# Where service data goes when its user cannot reach the checkout (service_dir).
RELOCATED="/var/lib/nakhon/$(printf '%s' "$REPO" | sha256sum | cut -c1-12)"

# ours PID: the process is one this stack started: its command line names the
# checkout or the stack's relocated data. A pid file outlives a reboot or a
# crash, and its number may since belong to someone else's process.
ours() {
  local cmd
  cmd="$(tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *"$REPO/"* || "$cmd" == *"$RELOCATED/"* ]]
}

# foreign PID: a live process that is not ours. (An exiting process has an empty
# command line: that is ours finishing, not someone else's.)
foreign() {
  [[ -s "/proc/$1/cmdline" ]] && ! ours "$1"
}

# pid_alive NAME: the service's pid file names a running process of ours.
pid_alive() {
  local f="$RUN/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  kill -0 "$pid" 2>/dev/null && ours "$pid"
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# stop_pid NAME [TIMEOUT_S]: SIGTERM the process in NAME.pid, wait, then SIGKILL.
stop_pid() {
  local name="$1" timeout="${2:-30}" f="$RUN/$1.pid" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if foreign "$pid"; then
    warn "$name: pid $pid is no longer ours (stale pid file); leaving that process alone"
  elif kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + timeout))
    while kill -0 "$pid" 2>/dev/null; do
      if (( SECONDS >= deadline )); then
        warn "$name did not stop within ${timeout}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
  fi
  rm -f "$f"
}

# apt_install PKG...: install Debian packages that are missing, without letting
# their maintainer scripts start system services (we run our own instances).
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  (( ${#missing[@]} == 0 )) && return 0
  say "installing Debian packages: ${missing[*]}"
  local log="$LOGS/apt.log" guard=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; guard=1
  fi
  local rc=0
  {
    export DEBIAN_FRONTEND=noninteractive
    if [[ ! -f "$STATE/.apt-updated" ]] || ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
      apt-get update -q && touch "$STATE/.apt-updated" &&
      apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
  } >>"$log" 2>&1 || rc=$?
  (( guard )) && rm -f /usr/sbin/policy-rc.d
  (( rc == 0 )) || die "apt-get install ${missing[*]}" "$log" "exit code $rc"
}
