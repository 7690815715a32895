# Mosquitto from Debian's packages, on 127.0.0.1:1883, persistence on so that
# QoS 1 sessions and their queued messages survive a restart.

MQTT_PORT=1883
MOSQ_DIR="$STATE/mosquitto"

mosquitto_install() {
  apt_install mosquitto mosquitto-clients
}

mosquitto_start() {
  if pid_alive mosquitto; then return 0; fi
  if port_open "$MQTT_PORT"; then
    die "start mosquitto" "" "port $MQTT_PORT is taken by a process Nakhon did not start; stop it or set NAKHON_MQTT_PORT and use your own broker"
  fi
  MOSQ_DIR="$(service_dir mosquitto mosquitto)"
  mkdir -p "$MOSQ_DIR/data"
  chown -R mosquitto:mosquitto "$MOSQ_DIR/data"
  cat > "$MOSQ_DIR/mosquitto.conf" <<CONF
# Written by deploy/local/services/mosquitto.sh; edits are overwritten.
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $MOSQ_DIR/data/
autosave_interval 10
# A gateway may have many QoS 1 messages in flight while Kafka acknowledges them.
max_inflight_messages 0
max_queued_messages 1000000
max_queued_bytes 0
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
}

mosquitto_stop() {
  stop_pid mosquitto 15
}

mosquitto_status() {
  if pid_alive mosquitto && port_open "$MQTT_PORT"; then
    echo "mosquitto   running  127.0.0.1:$MQTT_PORT  $(/usr/sbin/mosquitto -h 2>/dev/null | head -1 | sed 's/mosquitto //')"
  else
    echo "mosquitto   stopped"
  fi
}
