# Mosquitto from Debian's packages, on 127.0.0.1:1883 and, with TLS, :8883.
# Persistence on, so that QoS 1 sessions and their queued messages survive a
# restart. No anonymous access: the dynamic security plugin (shipped in the
# package) holds every client and its ACLs; `nakhon broker init` writes its
# first file (the admin and the local gateway) with generated passwords, kept
# in .nakhon/secrets/local.env. A local CA and server certificate for TLS are
# generated once, under .nakhon/tls/ (clients need only .nakhon/tls/ca.crt).

#: TLS where the client's certificate is its login (its CN is the username).
MOSQ_DIR="$STATE/mosquitto"
TLS_DIR="$STATE/tls"

mosquitto_install() {
  apt_install mosquitto mosquitto-clients openssl
}

mosquitto_dynsec_plugin() {
  dpkg -L mosquitto 2>/dev/null | grep -m1 '/mosquitto_dynamic_security\.so$' \
    || die "start mosquitto" "" "the mosquitto package has no mosquitto_dynamic_security.so"
}

# mosquitto_tls: a CA and a server certificate for 127.0.0.1/localhost, made once.
mosquitto_tls() {
  local log="$LOGS/tls.log"
  [[ -f "$TLS_DIR/ca.crt" && -f "$TLS_DIR/server.crt" && -f "$TLS_DIR/server.key" ]] && return 0
  say "generating a local certificate authority and the broker's TLS certificate (.nakhon/tls)"
  mkdir -p "$TLS_DIR"; chmod 755 "$TLS_DIR"
  (
    set -e
    cd "$TLS_DIR"
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -keyout ca.key -out ca.crt -subj "/O=Nakhon local stack/CN=Nakhon local CA"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout server.key -out server.csr -subj "/O=Nakhon local stack/CN=localhost"
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
      "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
      -extfile server.ext -out server.crt
    rm -f server.csr server.ext
    chmod 644 ca.crt server.crt
  ) >>"$log" 2>&1 || die "generate TLS certificates" "$log" "openssl failed"
}

mosquitto_start() {
  if pid_alive mosquitto; then return 0; fi
  local port
  for port in "$MQTT_PORT" "$MQTT_TLS_PORT" "$MQTT_X509_PORT"; do
    if port_open "$port"; then
      die "start mosquitto" "" "port $port is taken by a process Nakhon did not start; stop it or set NAKHON_MQTT_PORT and use your own broker"
    fi
  done
  MOSQ_DIR="$(service_dir mosquitto mosquitto)"
  mkdir -p "$MOSQ_DIR/data" "$MOSQ_DIR/dynsec" "$MOSQ_DIR/tls"
  mosquitto_tls
  # The broker reads its key as the mosquitto user: its own copy, for it alone.
  install -m 600 -o mosquitto -g mosquitto "$TLS_DIR/server.key" "$MOSQ_DIR/tls/server.key"
  install -m 644 "$TLS_DIR/server.crt" "$TLS_DIR/ca.crt" "$MOSQ_DIR/tls/"
  local dynsec="$MOSQ_DIR/dynsec/dynamic-security.json"
  if [[ -f "$dynsec" ]] && ! grep -q '^NAKHON_MQTT_ADMIN_PASSWORD=' "$ENV_FILE" 2>/dev/null; then
    # Left by an earlier checkout at this path (its data lives outside the
    # checkout) whose credentials went with it: nobody can administer it.
    warn "the broker's credentials file $dynsec belongs to credentials this checkout no longer has; moving it aside and making new ones (its devices must be added again)"
    mv "$dynsec" "$dynsec.orphaned-$(date +%Y%m%dT%H%M%S)"
  fi
  "$REPO/.venv/bin/nakhon" broker init --dynsec-file "$MOSQ_DIR/dynsec/dynamic-security.json" \
    --env-file "$ENV_FILE" >>"$LOGS/mosquitto-init.log" 2>&1 \
    || die "nakhon broker init" "$LOGS/mosquitto-init.log" "could not write the broker's credentials"
  chmod 700 "$SECRETS"
  chown -R mosquitto:mosquitto "$MOSQ_DIR/data" "$MOSQ_DIR/dynsec"
  chmod 700 "$MOSQ_DIR/dynsec"
  cat > "$MOSQ_DIR/mosquitto.conf" <<CONF
# Written by deploy/local/services/mosquitto.sh; edits are overwritten.
per_listener_settings false
allow_anonymous false
plugin $(mosquitto_dynsec_plugin)
plugin_opt_config_file $MOSQ_DIR/dynsec/dynamic-security.json
listener $MQTT_PORT 127.0.0.1
listener $MQTT_TLS_PORT 127.0.0.1
cafile $MOSQ_DIR/tls/ca.crt
certfile $MOSQ_DIR/tls/server.crt
keyfile $MOSQ_DIR/tls/server.key
# Devices that cannot keep a password: their certificate (signed by the CA) is
# the login, its CN the username; the plugin applies that device's role.
listener $MQTT_X509_PORT 127.0.0.1
cafile $MOSQ_DIR/tls/ca.crt
certfile $MOSQ_DIR/tls/server.crt
keyfile $MOSQ_DIR/tls/server.key
require_certificate true
use_identity_as_username true
persistence true
persistence_location $MOSQ_DIR/data/
autosave_interval 10
# The largest packet: Kafka's 1 MiB record limit, so what the broker takes the
# gateway can forward; larger ones are refused at the door.
max_packet_size 1048576
# A gateway may have many QoS 1 messages in flight while Kafka acknowledges them.
max_inflight_messages 0
# Per client, what is queued while it is away (a gateway's persistent session
# while the gateway restarts). Past either bound the broker drops new QoS 1
# messages for that client: size them for your longest gateway outage.
max_queued_messages 1000000
max_queued_bytes 1073741824
log_dest stdout
log_type error
log_type warning
log_type notice
log_timestamp_format %Y-%m-%dT%H:%M:%S
user mosquitto
CONF
  setsid /usr/sbin/mosquitto -c "$MOSQ_DIR/mosquitto.conf" >>"$LOGS/mosquitto.log" 2>&1 < /dev/null &
  echo $! > "$RUN/mosquitto.pid"
  wait_ready mosquitto 20 "$LOGS/mosquitto.log" port_open "$MQTT_PORT"
  wait_ready mosquitto 20 "$LOGS/mosquitto.log" port_open "$MQTT_TLS_PORT"
  wait_ready mosquitto 20 "$LOGS/mosquitto.log" port_open "$MQTT_X509_PORT"
}

mosquitto_stop() {
  stop_pid mosquitto 15
}

mosquitto_status() {
  if pid_alive mosquitto && port_open "$MQTT_PORT"; then
    echo "mosquitto   running  127.0.0.1:$MQTT_PORT, TLS :$MQTT_TLS_PORT, certificate login :$MQTT_X509_PORT  $(/usr/sbin/mosquitto -h 2>/dev/null | head -1 | sed 's/mosquitto //'), no anonymous access"
  else
    echo "mosquitto   stopped"
  fi
}
