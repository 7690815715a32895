# Prometheus from Debian's package, as our own process on 127.0.0.1:9090 with
# its data under $STATE/prometheus (the package's system service stays off).
# It scrapes the gateways (:9101, and :9111, ... with NAKHON_GATEWAYS), the
# processors (:9102, :9112, ... with NAKHON_PROCESSORS) and the API (:8080), and evaluates the alert rules of deploy/prometheus/rules/.
# The package also brings promtool, which the rule tests use.

PROM_DIR="$STATE/prometheus"
PROM_RULES="$REPO/deploy/prometheus/rules"
PROM_RETENTION="${NAKHON_PROMETHEUS_RETENTION:-15d}"

prometheus_install() {
  apt_install prometheus
}

# prometheus_targets FIRST_PORT COUNT: '"127.0.0.1:P", ...' for COUNT instances.
prometheus_targets() {
  local i list=""
  for (( i = 0; i < $2; i++ )); do list+="${list:+, }\"127.0.0.1:$(($1 + 10 * i))\""; done
  echo "$list"
}

# prometheus_config: the scrape configuration of deploy/prometheus/prometheus.yml
# (written for docker compose, where the services are reached by name), with
# the local stack's addresses (every gateway and processor `make up` runs) and
# the rules' absolute path.
prometheus_config() {
  cat <<CONF
# Written by deploy/local/services/prometheus.sh; edits are overwritten.
# Same jobs as deploy/prometheus/prometheus.yml, local addresses.
global:
  scrape_interval: 15s
  evaluation_interval: 15s
  external_labels:
    deployment: local

rule_files:
  - $PROM_DIR/rules/*.yml

scrape_configs:
  - job_name: gateway
    static_configs:
      - targets: [$(prometheus_targets "$GATEWAY_METRICS_PORT" "$NAKHON_GATEWAY_COUNT")]
  - job_name: processor
    static_configs:
      - targets: [$(prometheus_targets "$PROCESSOR_METRICS_PORT" "$NAKHON_PROCESSOR_COUNT")]
  - job_name: api
    static_configs:
      - targets: ["127.0.0.1:$API_PORT"]
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$PROM_PORT"]
CONF
}

# prometheus_write_config: prometheus_config and the rules, where the
# prometheus user reads them.
prometheus_write_config() {
  PROM_DIR="$(service_dir prometheus prometheus)"
  mkdir -p "$PROM_DIR/data" "$PROM_DIR/rules"
  # A copy the prometheus user can read wherever the checkout is.
  rm -f "$PROM_DIR"/rules/*.yml
  cp "$PROM_RULES"/*.yml "$PROM_DIR/rules/"
  prometheus_config > "$PROM_DIR/prometheus.yml"
  chown -R prometheus:prometheus "$PROM_DIR"
}

# prometheus_ready: GET /-/ready answers 200 (bash's /dev/tcp, no curl needed).
prometheus_ready() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$PROM_PORT" || exit 1
    printf 'GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    IFS= read -r -t 2 status <&3 || exit 1
    [[ "$status" == *" 200 "* ]]
  ) 2>/dev/null
}

prometheus_start() {
  if pid_alive prometheus; then
    # Running: a changed scrape list (NAKHON_GATEWAYS, NAKHON_PROCESSORS) is reloaded.
    local before
    before="$(cat "$PROM_DIR/prometheus.yml" 2>/dev/null)" || true
    prometheus_write_config
    if [[ "$(cat "$PROM_DIR/prometheus.yml")" != "$before" ]]; then
      curl -fs -o /dev/null -X POST "http://127.0.0.1:$PROM_PORT/-/reload" \
        || warn "prometheus did not reload its configuration; restart it with make down && make up"
    fi
    return 0
  fi
  if port_open "$PROM_PORT"; then
    die "start prometheus" "" "port $PROM_PORT is taken by a process Nakhon did not start (the system's prometheus service?); stop it (systemctl stop prometheus)"
  fi
  prometheus_write_config
  /usr/bin/promtool check config "$PROM_DIR/prometheus.yml" >"$LOGS/prometheus-check.log" 2>&1 \
    || die "check the prometheus configuration" "$LOGS/prometheus-check.log" "promtool check config failed"
  touch "$LOGS/prometheus.log"
  # setpriv execs (no fork), so the pid file names Prometheus itself.
  setsid setpriv --reuid=prometheus --regid=prometheus --init-groups \
    /usr/bin/prometheus \
      --config.file="$PROM_DIR/prometheus.yml" \
      --storage.tsdb.path="$PROM_DIR/data" \
      --storage.tsdb.retention.time="$PROM_RETENTION" \
      --web.listen-address="127.0.0.1:$PROM_PORT" \
      --web.enable-lifecycle \
    >>"$LOGS/prometheus.log" 2>&1 < /dev/null &
  echo $! > "$RUN/prometheus.pid"
  wait_ready prometheus 60 "$LOGS/prometheus.log" prometheus_ready
}

prometheus_stop() {
  stop_pid prometheus 30
}

prometheus_status() {
  if pid_alive prometheus && prometheus_ready; then
    local v; v="$(/usr/bin/prometheus --version 2>&1 | sed -n '1s/^prometheus, version \([^ ]*\).*/\1/p')"
    echo "prometheus  running  127.0.0.1:$PROM_PORT  Prometheus $v, scraping the gateways, processors and API"
  else
    echo "prometheus  stopped"
  fi
}
