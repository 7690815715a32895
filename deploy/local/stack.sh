#!/usr/bin/env bash
# The local stack: Mosquitto, Kafka (KRaft) and PostgreSQL + TimescaleDB,
# installed from Debian's packages and Maven Central, run as plain processes
# with all their data, logs and pids under .nakhon/ of this checkout.
#
#   deploy/local/stack.sh install   install what is missing (idempotent)
#   deploy/local/stack.sh up        install, start, wait until each answers
#   deploy/local/stack.sh down      stop what this stack started, nothing else
#   deploy/local/stack.sh status    what runs, on which port, which edition
#
# NAKHON_KAFKA_BROKERS=3 runs a replicated Kafka cluster; NAKHON_GATEWAYS=N and
# NAKHON_PROCESSORS=M run several of each (services/kafka.sh, services/nakhon.sh).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for f in "$DEPLOY"/services/*.sh; do source "$f"; done

SERVICES=(mosquitto kafka postgres nakhon prometheus)

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

[[ $EUID -eq 0 ]] || [[ "${1:-}" == status || "${1:-}" == help || -z "${1:-}" ]] \
  || die "${1:-}" "" "run as root: it installs Debian packages and starts services as their users"

case "${1:-}" in
  install)
    for s in "${SERVICES[@]}"; do "${s}_install"; done ;;
  up)
    scale_save
    for s in "${SERVICES[@]}"; do "${s}_install"; done
    for s in "${SERVICES[@]}"; do "${s}_start"; done
    if (( KAFKA_BROKERS == 1 )); then kafka_where=":$KAFKA_PORT (SCRAM+TLS :$KAFKA_SCRAM_PORT)"
    else kafka_where="$KAFKA_BROKERS brokers :$KAFKA_PORT-$((KAFKA_PORT + KAFKA_BROKERS - 1)) (SCRAM+TLS :$KAFKA_SCRAM_PORT-$((KAFKA_SCRAM_PORT + KAFKA_BROKERS - 1)))"; fi
    say "ready: mosquitto :$MQTT_PORT, kafka $kafka_where, postgres :$PG_PORT, $NAKHON_GATEWAY_COUNT gateway(s) :$GATEWAY_METRICS_PORT, $NAKHON_PROCESSOR_COUNT processor(s) :$PROCESSOR_METRICS_PORT, api :$API_PORT, prometheus :$PROM_PORT (logs in ${LOGS#"$REPO"/})" ;;
  down)
    for (( i=${#SERVICES[@]}-1; i>=0; i-- )); do "${SERVICES[i]}_stop"; done
    say "stack stopped" ;;
  status)
    for s in "${SERVICES[@]}"; do "${s}_status"; done ;;
  -h|--help|help|"")
    usage ;;
  *)
    usage >&2; exit 2 ;;
esac
