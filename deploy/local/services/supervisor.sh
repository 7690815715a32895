# supervisord (Debian's `supervisor` package) as a process of the stack: it
# runs Nakhon's services (deploy/local/services/nakhon.sh), restarts one that
# exits, and stops them with SIGTERM. Its configuration, socket, pid file and
# log are the stack's ($STATE/supervisor/supervisord.conf, $RUN/supervisor.sock,
# $RUN/supervisord.pid, $LOGS/supervisord.log); the package's system service
# and /etc/supervisor are never used. Sourced: helpers, not a service of its own.

SUPERVISOR_DIR="$STATE/supervisor"
SUPERVISOR_CONF="$SUPERVISOR_DIR/supervisord.conf"
SUPERVISOR_SOCK="$RUN/supervisor.sock"
SUPERVISOR_PID="$RUN/supervisord.pid"
SUPERVISOR_EXEC="$DEPLOY/services/supervisor/exec-service.sh"

# The restart policy of every program (deploy/systemd/*.service says the same
# to systemd, docker-compose.yml to Docker):
# up this long counts as started; an earlier exit is a failed start ...
SUPERVISOR_START_SECS=10
# ... retried after 1, 2, ... N seconds, then given up (FATAL, in `make status`).
SUPERVISOR_START_RETRIES=5
# SIGTERM drains (20 s of grace in nakhon/service_runner.py); SIGKILL after this.
SUPERVISOR_STOP_WAIT_SECS=30

supervisor_install() {
  apt_install supervisor
}

# supervisor_quote WORD: WORD for a supervisord command line (shlex-split) in
# an ini file (where % starts an expansion).
supervisor_quote() {
  local q
  q="$(printf '%q' "$1")"
  printf '%s' "${q//%/%%}"
}

# supervisor_program PROGRAM FILE ENV COMMAND...: a [program:PROGRAM] section
# with the stack's restart policy. It runs COMMAND through exec-service.sh,
# which counts its starts in $RUN/FILE.starts and writes its pid to
# $RUN/FILE.pid; its output goes to $LOGS/FILE.log. ENV is supervisord's
# `environment` value (KEY="value",...; may be empty).
supervisor_program() {
  local name="$1" file="$2" env="$3" word cmd
  shift 3
  cmd="$(supervisor_quote "$SUPERVISOR_EXEC") $(supervisor_quote "$RUN") $(supervisor_quote "$file")"
  for word in "$@"; do cmd+=" $(supervisor_quote "$word")"; done
  cat <<CONF

[program:$name]
command=$cmd
directory=${REPO//%/%%}
autostart=true
autorestart=true
startsecs=$SUPERVISOR_START_SECS
startretries=$SUPERVISOR_START_RETRIES
stopsignal=TERM
stopwaitsecs=$SUPERVISOR_STOP_WAIT_SECS
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=${LOGS//%/%%}/$file.log
stdout_logfile_maxbytes=50MB
stdout_logfile_backups=3
CONF
  [[ -z "$env" ]] || echo "environment=${env//%/%%}"
}

# supervisor_write_config GROUP PROGRAM_SECTIONS: supervisord.conf with the
# programs (from supervisor_program) in one group, so that they stop together.
# The file is rewritten only when its text changes.
supervisor_write_config() {
  local group="$1" sections="$2" names new
  names="$(sed -n 's/^\[program:\(.*\)\]$/\1/p' <<<"$sections" | paste -sd, -)"
  mkdir -p "$SUPERVISOR_DIR"
  new="$(cat <<CONF
; Written by deploy/local/services/supervisor.sh at each \`make up\`; edits are overwritten.
; Only its owner reaches the socket (mode 0700), so it needs no password
; (supervisord logs a CRIT line about running "without any HTTP authentication").
[unix_http_server]
file=${SUPERVISOR_SOCK//%/%%}
chmod=0700

[supervisorctl]
serverurl=unix://${SUPERVISOR_SOCK//%/%%}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisord]
user=$(id -un)
directory=${REPO//%/%%}
logfile=${LOGS//%/%%}/supervisord.log
logfile_maxbytes=10MB
logfile_backups=3
pidfile=${SUPERVISOR_PID//%/%%}
childlogdir=${LOGS//%/%%}
identifier=nakhon
$sections

[group:$group]
programs=$names
CONF
)"
  if [[ -f "$SUPERVISOR_CONF" && "$(cat "$SUPERVISOR_CONF")" == "$new" ]]; then
    return 0
  fi
  printf '%s\n' "$new" > "$SUPERVISOR_CONF.tmp"
  mv -f "$SUPERVISOR_CONF.tmp" "$SUPERVISOR_CONF"
}

supervisor_ctl() {
  supervisorctl -c "$SUPERVISOR_CONF" "$@"
}

# supervisor_alive: the stack's supervisord runs (its pid file names a live
# supervisord reading our configuration).
supervisor_alive() {
  local pid cmd
  [[ -f "$SUPERVISOR_PID" ]] || return 1
  read -r pid < "$SUPERVISOR_PID" || return 1
  cmd="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *supervisord*"$SUPERVISOR_CONF"* ]]
}

# supervisor_answers: supervisord takes commands on its socket.
supervisor_answers() {
  supervisor_ctl pid 2>/dev/null | grep -qx '[0-9][0-9]*'
}

# supervisor_launch: start supervisord (it daemonizes, starts every program of
# its configuration, and keeps them running); return once it answers.
supervisor_launch() {
  local log="$LOGS/supervisord.log" deadline=$((SECONDS + 30))
  /usr/bin/supervisord -c "$SUPERVISOR_CONF" >>"$log" 2>&1 < /dev/null \
    || die "start supervisord" "$log" "supervisord refused to start"
  until supervisor_answers; do
    (( SECONDS < deadline )) || die "start supervisord" "$log" "no answer on $SUPERVISOR_SOCK after 30s"
    sleep 0.2
  done
}

# supervisor_shutdown: stop every program (SIGTERM, SIGKILL after
# stopwaitsecs), then supervisord itself; return once it has exited.
supervisor_shutdown() {
  local pid deadline=$((SECONDS + SUPERVISOR_STOP_WAIT_SECS + 15))
  read -r pid < "$SUPERVISOR_PID"
  supervisor_ctl shutdown >/dev/null 2>&1 || true
  while kill -0 "$pid" 2>/dev/null; do
    if (( SECONDS >= deadline )); then
      warn "supervisord did not stop; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$SUPERVISOR_PID"
}

# supervisor_starts FILE: how many times supervisord has started the program
# whose files are named FILE since it was launched (exec-service.sh counts them).
supervisor_starts() {
  local n=0
  [[ -f "$RUN/$1.starts" ]] && read -r n < "$RUN/$1.starts" || true
  [[ "$n" =~ ^[0-9]+$ ]] || n=0
  echo "$n"
}
