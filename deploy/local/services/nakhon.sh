# Nakhon's own services from the checkout's virtualenv: the gateway (:9101),
# the processor (:9102) and, once present, the API (:8080) and the rollup and
# retention maintenance; each answers /readyz before `up` returns.
#
# They run under the stack's supervisord (deploy/local/services/supervisor.sh):
# one that crashes or is killed is started again, with a backoff when it fails
# at start and given up (FATAL, shown by `make status`) after
# $SUPERVISOR_START_RETRIES failed starts. `make status` shows each one's state,
# uptime and restarts; the metrics show restarts as a new
# process_start_time_seconds. Logs: .nakhon/logs/nakhon-<name>.log.
#
# Several of each: NAKHON_GATEWAYS=N and NAKHON_PROCESSORS=M (`make up`) run
# gateway, gateway-2, ... and processor, processor-2, ..., instance i serving
# /metrics on the first's port + 10*(i-1) (nakhon/local_stack.env).
#  - The processors are one consumer group: nakhon.raw's partitions
#    ($KAFKA_PARTITIONS) are split between them, so more than that would idle.
#  - One gateway reads the device topics itself (a plain subscription, which
#    Mosquitto 2.0 keeps across its restarts). Several share them through the
#    MQTT shared subscription group "$NAKHON_LOCAL_SHARE_GROUP", each with a
#    login of its own (gateway:local-<i>, in .nakhon/secrets/gateway-<i>.env).
#    Mosquitto 2.0 does not keep shared subscriptions across its own restart:
#    what devices publish between a broker restart and the gateways'
#    reconnect is lost. docs/deploy.md says how to scale gateways without that
#    (a broker per group of cities, or a broker that keeps them).

NAKHON_BIN="$REPO/.venv/bin/nakhon"
NAKHON_GATEWAY_COUNT="${NAKHON_GATEWAYS:-1}"
NAKHON_PROCESSOR_COUNT="${NAKHON_PROCESSORS:-1}"
[[ "$NAKHON_GATEWAY_COUNT" =~ ^[1-9]$ ]] \
  || die "nakhon" "" "NAKHON_GATEWAYS=$NAKHON_GATEWAY_COUNT: use 1 to 9"
[[ "$NAKHON_PROCESSOR_COUNT" =~ ^[1-9][0-9]*$ ]] && (( NAKHON_PROCESSOR_COUNT <= KAFKA_PARTITIONS )) \
  || die "nakhon" "" "NAKHON_PROCESSORS=$NAKHON_PROCESSOR_COUNT: use 1 to $KAFKA_PARTITIONS (nakhon.raw's partitions, NAKHON_KAFKA_PARTITIONS; a processor beyond them would idle)"
NAKHON_LOCAL_SHARE_GROUP=nakhon

# nakhon_instance SERVICE I: the program's name of instance I (gateway, gateway-2, ...).
nakhon_instance() {
  if (( $2 == 1 )); then echo "$1"; else echo "$1-$2"; fi
}

# name:ready-url; a service whose command the installed nakhon lacks is skipped.
NAKHON_SERVICES=()
for (( i = 1; i <= NAKHON_GATEWAY_COUNT; i++ )); do
  NAKHON_SERVICES+=("$(nakhon_instance gateway "$i"):http://127.0.0.1:$((GATEWAY_METRICS_PORT + 10 * (i - 1)))/readyz")
done
for (( i = 1; i <= NAKHON_PROCESSOR_COUNT; i++ )); do
  NAKHON_SERVICES+=("$(nakhon_instance processor "$i"):http://127.0.0.1:$((PROCESSOR_METRICS_PORT + 10 * (i - 1)))/readyz")
done
NAKHON_SERVICES+=("api:http://127.0.0.1:$API_PORT/readyz" "maintain:")
unset i
# The supervisord group of the services: `supervisorctl -c
# .nakhon/supervisor/supervisord.conf status nakhon:*`, `restart nakhon:api`, ...
NAKHON_GROUP=nakhon

# nakhon_command NAME: the nakhon command a program runs (gateway-2 runs gateway).
nakhon_command() { echo "${1%-[0-9]*}"; }

# nakhon_instance_number NAME: 1 for gateway, 2 for gateway-2, ...
nakhon_instance_number() {
  if [[ "$1" == *-[0-9]* ]]; then echo "${1##*-}"; else echo 1; fi
}

nakhon_install() {
  apt_install curl
  supervisor_install
  [[ -x "$NAKHON_BIN" ]] || die "install nakhon" "" "no $NAKHON_BIN: run 'make up' (it creates .venv first)"
}

nakhon_has_command() {
  "$NAKHON_BIN" "$1" --help >/dev/null 2>&1
}

nakhon_ready() { curl -fs -o /dev/null --max-time 2 "$1"; }

# nakhon_program_env NAME: supervisord's `environment` value for program NAME.
# The services read their generated credentials from $ENV_FILE
# (nakhon/config.py); the rest of their environment is `make up`'s.
nakhon_program_env() {
  local name="$1" n env="NAKHON_ENV_FILE=\"$ENV_FILE\""
  n="$(nakhon_instance_number "$name")"
  case "$(nakhon_command "$name")" in
    gateway)
      if (( NAKHON_GATEWAY_COUNT > 1 )); then
        # Its own login (and the share group) after the stack's file: the later wins.
        env="NAKHON_ENV_FILE=\"$ENV_FILE:$SECRETS/gateway-$n.env\""
        env+=",NAKHON_GATEWAY_NAME=\"$(hostname)-$n\""
      fi
      (( n == 1 )) || env+=",NAKHON_GATEWAY_METRICS_PORT=\"$((GATEWAY_METRICS_PORT + 10 * (n - 1)))\"" ;;
    processor)
      (( n == 1 )) || env+=",NAKHON_PROCESSOR_METRICS_PORT=\"$((PROCESSOR_METRICS_PORT + 10 * (n - 1)))\"" ;;
  esac
  echo "$env"
}

# nakhon_supervisor_config NAME...: supervisord.conf with a program per service.
nakhon_supervisor_config() {
  local name sections=""
  for name in "$@"; do
    sections+="$(supervisor_program "$name" "nakhon-$name" "$(nakhon_program_env "$name")" \
      "$NAKHON_BIN" "$(nakhon_command "$name")")"$'\n'
  done
  supervisor_write_config "$NAKHON_GROUP" "$sections"
}

# nakhon_gateway_logins: with several gateways, each one's broker login in
# $SECRETS/gateway-<i>.env (gateway:local-<i>, reading only through the share
# group), made once. When the stack switches between one gateway and several,
# it notes in NAKHON_RETIRED_GATEWAYS the logins no longer used, whose sessions
# nakhon_drain_retired_gateways drains once the new gateways run.
NAKHON_RETIRED_GATEWAYS=()
NAKHON_GATEWAY_MODE=plain
nakhon_gateway_logins() {
  local previous="" i file log="$LOGS/nakhon-migrate.log"
  (( NAKHON_GATEWAY_COUNT == 1 )) || NAKHON_GATEWAY_MODE="shared-$NAKHON_GATEWAY_COUNT"
  previous="$(cat "$STATE/gateway-mode" 2>/dev/null)" || true
  if [[ "$previous" == plain && "$NAKHON_GATEWAY_MODE" != plain ]]; then
    NAKHON_RETIRED_GATEWAYS+=("$ENV_FILE")
  elif [[ "$previous" == shared-* ]]; then
    for (( i = 1; i <= ${previous#shared-}; i++ )); do
      (( NAKHON_GATEWAY_COUNT > 1 && i <= NAKHON_GATEWAY_COUNT )) && continue
      [[ -f "$SECRETS/gateway-$i.env" ]] && NAKHON_RETIRED_GATEWAYS+=("$ENV_FILE:$SECRETS/gateway-$i.env")
    done
  fi
  for (( i = 1; NAKHON_GATEWAY_COUNT > 1 && i <= NAKHON_GATEWAY_COUNT; i++ )); do
    file="$SECRETS/gateway-$i.env"
    grep -q '^NAKHON_MQTT_PASSWORD=' "$file" 2>/dev/null && continue
    # A login without its file (deleted by hand): made again, with a new password.
    "$NAKHON_BIN" gateways revoke "local-$i" >>"$log" 2>&1 || true
    "$NAKHON_BIN" gateways add "local-$i" --share-group "$NAKHON_LOCAL_SHARE_GROUP" --env-file "$file" >>"$log" 2>&1 \
      || die "nakhon gateways add local-$i" "$log" "could not make gateway $i's broker login"
  done
}

# nakhon_drain_retired_gateways: the sessions of the gateway logins the stack no
# longer runs (NAKHON_RETIRED_GATEWAYS), drained once the new gateways run:
# what the broker queued for them (during the switch, or their share of the
# group) goes to Kafka, then the session ends (`nakhon gateway --drain`).
# Ended without draining, that would be lost; left alone, the broker would go
# on queueing for them (up to max_queued_messages).
nakhon_drain_retired_gateways() {
  local files log="$LOGS/nakhon-migrate.log"
  for files in "${NAKHON_RETIRED_GATEWAYS[@]}"; do
    say "draining the session of a gateway no longer run ($(sed -n 's/^NAKHON_MQTT_USERNAME=//p' "${files##*:}" | tr -d "'"))"
    NAKHON_ENV_FILE="$files" "$NAKHON_BIN" gateway --drain --idle-seconds 3 >>"$log" 2>&1 \
      || die "nakhon gateway --drain" "$log" "could not drain a retired gateway's session; make up tries again"
  done
  echo "$NAKHON_GATEWAY_MODE" > "$STATE/gateway-mode"
}

# nakhon_stop_unsupervised: stop services whose pid file names a process of
# ours while no supervisord runs: those the scripts before supervisord started
# (setsid and a pid file), or those a supervisord that was killed left behind.
# All at once: each drains for a second or two, and none waits for another.
nakhon_stop_unsupervised() {
  local entry pids=()
  for entry in "${NAKHON_SERVICES[@]}"; do
    if pid_alive "nakhon-${entry%%:*}"; then
      stop_pid "nakhon-${entry%%:*}" "$SUPERVISOR_STOP_WAIT_SECS" &
      pids+=("$!")
    fi
  done
  # Only these: `wait` alone would also wait for the daemons `up` started.
  (( ${#pids[@]} == 0 )) || wait "${pids[@]}"
}

# nakhon_state NAME: supervisord's state of the service (RUNNING, STARTING,
# BACKOFF, FATAL, STOPPED, EXITED, ...), or "UNKNOWN".
nakhon_state() {
  local line state
  line="$(supervisor_ctl status "$NAKHON_GROUP:$1" 2>/dev/null)" || true
  read -r _ state _ <<<"$line"
  echo "${state:-UNKNOWN}"
}

# nakhon_wait_started NAME URL: until the service answers URL or, without one,
# supervisord counts it started (up $SUPERVISOR_START_SECS s: one that exits at
# start is reported here, not later); die when supervisord gives it up or
# after 60 s.
nakhon_wait_started() {
  local name="$1" url="$2" deadline=$((SECONDS + 60)) state
  while :; do
    state="$(nakhon_state "$name")"
    case "$state" in
      RUNNING)
        if [[ -z "$url" ]] || nakhon_ready "$url"; then return 0; fi ;;
      STARTING)
        if [[ -n "$url" ]] && nakhon_ready "$url"; then return 0; fi ;;
      FATAL) die "start nakhon-$name" "$LOGS/nakhon-$name.log" \
           "it kept exiting at start and supervisord gave up on it (FATAL); once the cause is fixed, 'make up' starts it again" ;;
      # BACKOFF: it exited at start, supervisord tries again after a pause;
      # EXITED, STOPPED: between an exit and its restart, or before supervisord's first start.
    esac
    (( SECONDS < deadline )) || die "start nakhon-$name" "$LOGS/nakhon-$name.log" "not ready after 60s (supervisord: $state)"
    sleep 0.2
  done
}

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
  local entry name names=()
  for entry in "${NAKHON_SERVICES[@]}"; do
    nakhon_has_command "$(nakhon_command "${entry%%:*}")" && names+=("${entry%%:*}")
  done
  nakhon_gateway_logins
  local before
  before="$(cat "$SUPERVISOR_CONF" 2>/dev/null)" || true
  nakhon_supervisor_config "${names[@]}"
  # A new configuration (another NAKHON_GATEWAYS, say) restarts the group at
  # `update` below: those starts are not crashes, so the restart counts that
  # `make status` shows begin again.
  [[ "$(cat "$SUPERVISOR_CONF")" == "$before" ]] || rm -f "$RUN"/nakhon-*.starts
  if supervisor_alive; then
    # Already supervised: apply a changed configuration (restarts only the
    # programs it changed; nothing when it is the same), and start again what
    # was stopped or given up.
    supervisor_ctl update >>"$LOGS/supervisord.log" 2>&1 \
      || die "supervisorctl update" "$LOGS/supervisord.log" "supervisord refused the new configuration"
    for name in "${names[@]}"; do
      case "$(nakhon_state "$name")" in
        STOPPED|EXITED|FATAL) supervisor_ctl start "$NAKHON_GROUP:$name" >/dev/null 2>&1 || true ;;
      esac
    done
  else
    # Services started without supervisord (by the scripts before it, or left
    # by a supervisord that was killed) give way to supervised ones.
    nakhon_stop_unsupervised
    rm -f "$RUN"/nakhon-*.starts
    supervisor_launch
  fi
  for entry in "${NAKHON_SERVICES[@]}"; do
    name="${entry%%:*}"
    [[ " ${names[*]} " == *" $name "* ]] || continue
    nakhon_wait_started "$name" "${entry#*:}"
  done
  nakhon_drain_retired_gateways
}

nakhon_stop() {
  # supervisord stops the group's services all at once (SIGTERM, each drains),
  # then exits; then whatever runs from a pid file without it.
  if supervisor_alive; then supervisor_shutdown; fi
  nakhon_stop_unsupervised
  local entry
  for entry in "${NAKHON_SERVICES[@]}"; do rm -f "$RUN/nakhon-${entry%%:*}.pid"; done
}

nakhon_status() {
  local supervised=0 table="" entry name url port line state detail restarts log
  if supervisor_alive; then
    supervised=1
    table="$(supervisor_ctl status "$NAKHON_GROUP:*" 2>/dev/null)" || true
    if [[ -z "$table" ]]; then
      echo "nakhon      supervisord runs (pid $(cat "$SUPERVISOR_PID")) but did not answer: its socket is root's"
      return 0
    fi
  fi
  for entry in "${NAKHON_SERVICES[@]}"; do
    name="${entry%%:*}"; url="${entry#*:}"
    port="$(sed -n 's#.*:\([0-9]*\)/.*#\1#p' <<<"$url")"
    log="${LOGS#"$REPO"/}/nakhon-$name.log"
    line="$(grep -E "^$NAKHON_GROUP:$name[[:space:]]" <<<"$table")" || true
    if (( supervised )) && [[ -n "$line" ]]; then
      read -r _ state detail <<<"$line"
      restarts=$(( $(supervisor_starts "nakhon-$name") - 1 ))
      (( restarts >= 0 )) || restarts=0
      case "$state" in
        RUNNING)
          if [[ -z "$url" ]] || nakhon_ready "$url"; then
            printf '%-11s running  %-16s %s, restarts %d\n' "$name" "${port:+127.0.0.1:$port}" "$detail" "$restarts"
          else
            printf '%-11s running, not ready (see %s)  %s, restarts %d\n' "$name" "$log" "$detail" "$restarts"
          fi ;;
        STARTING)
          printf '%-11s starting %-16s pid %s, up less than %d s, restarts %d\n' "$name" "${port:+127.0.0.1:$port}" \
            "$(cat "$RUN/nakhon-$name.pid" 2>/dev/null)" "$SUPERVISOR_START_SECS" "$restarts" ;;
        BACKOFF)
          printf '%-11s restarting: it exited at start, supervisord retries (see %s)  restarts %d\n' "$name" "$log" "$restarts" ;;
        FATAL)
          printf '%-11s failed: exited at start, supervisord gave up after %d starts (see %s; make up retries)\n' "$name" "$((restarts + 1))" "$log" ;;
        *)
          printf '%-11s %s  %s\n' "$name" "${state,,}" "$detail" ;;
      esac
    elif pid_alive "nakhon-$name"; then
      printf '%-11s running  %-16s not supervised (make up hands it to supervisord)\n' "$name" "${port:+127.0.0.1:$port}"
    elif [[ -x "$NAKHON_BIN" ]] && nakhon_has_command "$(nakhon_command "$name")"; then
      printf '%-11s stopped\n' "$name"
    fi
  done
  if (( supervised )); then
    printf '%-11s running  pid %s, restarts the services (%s)\n' \
      supervisord "$(cat "$SUPERVISOR_PID")" "${LOGS#"$REPO"/}/supervisord.log"
  fi
}
