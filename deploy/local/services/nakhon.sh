# Nakhon's own services from the checkout's virtualenv: the gateway (:9101),
# the processor (:9102) and, once present, the API (:8080) and the rollup and
# retention maintenance; each answers /readyz before `up` returns.

NAKHON_BIN="$REPO/.venv/bin/nakhon"
# name:ready-url; a service whose command the installed nakhon lacks is skipped.
NAKHON_SERVICES=(
  "gateway:http://127.0.0.1:$GATEWAY_METRICS_PORT/readyz"
  "processor:http://127.0.0.1:$PROCESSOR_METRICS_PORT/readyz"
  "api:http://127.0.0.1:$API_PORT/readyz"
  "maintain:"
)

nakhon_install() {
  apt_install curl
  [[ -x "$NAKHON_BIN" ]] || die "install nakhon" "" "no $NAKHON_BIN: run 'make up' (it creates .venv first)"
}

nakhon_has_command() {
  "$NAKHON_BIN" "$1" --help >/dev/null 2>&1
}

nakhon_ready() { curl -fsS -o /dev/null --max-time 2 "$1"; }

nakhon_start() {
  # The services read their generated credentials from here (nakhon/config.py).
  export NAKHON_ENV_FILE="$ENV_FILE"
  "$NAKHON_BIN" migrate >>"$LOGS/nakhon-migrate.log" 2>&1 \
    || die "nakhon migrate" "$LOGS/nakhon-migrate.log" "the schema migration failed"
  # The API serves only keyed requests: keep the local user's all-cities key
  # (NAKHON_API_LOCAL_KEY) in $ENV_FILE, made once per checkout, never printed.
  if nakhon_has_command api-keys; then
    "$NAKHON_BIN" api-keys ensure-env --env-file "$ENV_FILE" >>"$LOGS/nakhon-migrate.log" 2>&1 \
      || die "nakhon api-keys ensure-env" "$LOGS/nakhon-migrate.log" "could not make the local API key"
  fi
  local entry name url
  for entry in "${NAKHON_SERVICES[@]}"; do
    name="${entry%%:*}"; url="${entry#*:}"
    pid_alive "nakhon-$name" && continue
    nakhon_has_command "$name" || continue
    setsid "$NAKHON_BIN" "$name" >>"$LOGS/nakhon-$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN/nakhon-$name.pid"
  done
  for entry in "${NAKHON_SERVICES[@]}"; do
    name="${entry%%:*}"; url="${entry#*:}"
    [[ -f "$RUN/nakhon-$name.pid" && -n "$url" ]] || continue
    wait_ready "nakhon-$name" 60 "$LOGS/nakhon-$name.log" nakhon_ready "$url"
  done
}

nakhon_stop() {
  # All at once: each drains for a second or two, and none waits for another.
  local entry
  for entry in "${NAKHON_SERVICES[@]}"; do
    stop_pid "nakhon-${entry%%:*}" 30 &
  done
  wait
}

nakhon_status() {
  local entry name url port
  for entry in "${NAKHON_SERVICES[@]}"; do
    name="${entry%%:*}"; url="${entry#*:}"
    port="$(sed -n 's#.*:\([0-9]*\)/.*#\1#p' <<<"$url")"
    if pid_alive "nakhon-$name"; then
      if [[ -z "$url" ]] || nakhon_ready "$url"; then
        printf '%-11s running  %s\n' "$name" "${port:+127.0.0.1:$port}"
      else
        printf '%-11s starting or not ready (see .nakhon/logs/nakhon-%s.log)\n' "$name" "$name"
      fi
    elif [[ -x "$NAKHON_BIN" ]] && nakhon_has_command "$name"; then
      printf '%-11s stopped\n' "$name"
    fi
  done
}
