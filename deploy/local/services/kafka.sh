# Apache Kafka 4.x as one KRaft node (broker + controller) on 127.0.0.1:9092.
# The jars come from Maven Central through Maven (its ~/.m2 repository is the
# cache: a second install downloads nothing); the storage is formatted with the
# broker's own StorageTool and the broker runs as its own main class.
#
# Two client listeners, both on loopback: PLAINTEXT :9092 (the services' and
# the tests' default) and SASL_SSL :9095, SCRAM-SHA-512 over TLS with a broker
# certificate signed by the local CA (.nakhon/tls/ca.crt). Its user, `nakhon`,
# gets a password generated once per checkout, kept in $ENV_FILE as
# NAKHON_KAFKA_SASL_USERNAME/_PASSWORD (docs/security.md, "Kafka").

KAFKA_SCRAM_USER=nakhon
KAFKA_DIR="$STATE/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_HEAP="${NAKHON_KAFKA_HEAP:-512m}"
KAFKA_PARTITIONS="${NAKHON_KAFKA_PARTITIONS:-6}"
# The topics' durability: one node here; on three brokers, 3 and 2 (a record
# acknowledged with acks=all is then on two of them before the producer moves on).
KAFKA_REPLICATION_FACTOR="${NAKHON_KAFKA_REPLICATION_FACTOR:-1}"
KAFKA_MIN_INSYNC_REPLICAS="${NAKHON_KAFKA_MIN_INSYNC_REPLICAS:-1}"
KAFKA_TOPICS=(nakhon.raw nakhon.readings nakhon.deadletter)
# How long Kafka keeps raw records and dead letters (whole days; README, "Dead
# letters and replay"): raw longer than the processors' 30-day backfill window,
# so a replay covers it; dead letters long enough to fix a cause and replay them.
# Set when make up creates the topics; an existing topic keeps its retention.ms.
KAFKA_RAW_RETENTION_DAYS="${NAKHON_KAFKA_RAW_RETENTION_DAYS:-35}"
KAFKA_DEADLETTER_RETENTION_DAYS="${NAKHON_KAFKA_DEADLETTER_RETENTION_DAYS:-90}"

kafka_install() {
  apt_install openjdk-17-jre-headless maven
  local stamp="$KAFKA_LIBS/.pom.sha256" sum
  sum="$(sha256sum "$DEPLOY/kafka/pom.xml" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$sum" ]]; then return 0; fi
  say "resolving the Kafka broker's jars with Maven (cached in ~/.m2)"
  rm -rf "$KAFKA_LIBS"; mkdir -p "$KAFKA_LIBS"
  mvn -B -q -f "$DEPLOY/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" >"$LOGS/kafka-install.log" 2>&1 \
    || die "install kafka (mvn dependency:copy-dependencies)" "$LOGS/kafka-install.log" "Maven could not resolve the jars"
  echo "$sum" > "$stamp"
}

# The JVM command line shared by the broker and its tools.
KAFKA_JAVA=(java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
  -Djava.awt.headless=true -Dlog4j2.configurationFile="$DEPLOY/kafka/log4j2.yaml"
  -cp "$KAFKA_LIBS/*")

# Tools get a small heap and a quick JIT: they run for a second or two.
kafka_tool() {
  java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$DEPLOY/kafka/log4j2-tools.yaml" -cp "$KAFKA_LIBS/*" "$@"
}

# kafka_tls: the broker's certificate for 127.0.0.1/localhost, signed by the
# local CA (made with the MQTT broker's, mosquitto_tls), once; and its PEM
# keystore (key + certificate), which Kafka reads as ssl.keystore.type=PEM.
kafka_tls() {
  local log="$LOGS/tls.log"
  [[ -f "$TLS_DIR/ca.crt" && -f "$TLS_DIR/ca.key" ]] || mosquitto_tls
  if [[ ! -f "$TLS_DIR/kafka.crt" || ! -f "$TLS_DIR/kafka.key" ]]; then
    say "generating Kafka's TLS certificate, signed by the local CA (.nakhon/tls)"
    (
      set -e
      cd "$TLS_DIR"
      umask 077
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout kafka.key -out kafka.csr -subj "/O=Nakhon local stack/CN=localhost"
      printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
        "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" > kafka.ext
      openssl x509 -req -in kafka.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
        -extfile kafka.ext -out kafka.crt
      rm -f kafka.csr kafka.ext
      chmod 644 kafka.crt
    ) >>"$log" 2>&1 || die "generate Kafka's TLS certificate" "$log" "openssl failed"
  fi
  mkdir -p "$KAFKA_DIR/tls"
  (umask 077; cat "$TLS_DIR/kafka.key" "$TLS_DIR/kafka.crt" > "$KAFKA_DIR/tls/broker.pem")
}

# kafka_write_config FILE: the broker's configuration, as this script wants it now.
kafka_write_config() {
  mkdir -p "$KAFKA_DIR/data"
  cat > "$1" <<CONF
# Written by deploy/local/services/kafka.sh; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_SSL://127.0.0.1:$KAFKA_SCRAM_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SCRAM_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
# SCRAM-SHA-512 over TLS on :$KAFKA_SCRAM_PORT; the users' credentials live in
# the KRaft metadata (kafka_scram_user). No client certificates asked for.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_DIR/tls/broker.pem
log.dirs=$KAFKA_DIR/data
num.partitions=$KAFKA_PARTITIONS
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
num.network.threads=2
num.io.threads=4
CONF
}

kafka_start() {
  (( KAFKA_MIN_INSYNC_REPLICAS <= KAFKA_REPLICATION_FACTOR )) || die "start kafka" "" \
    "NAKHON_KAFKA_MIN_INSYNC_REPLICAS=$KAFKA_MIN_INSYNC_REPLICAS exceeds NAKHON_KAFKA_REPLICATION_FACTOR=$KAFKA_REPLICATION_FACTOR: no acks=all write could succeed"
  kafka_tls
  kafka_write_config "$KAFKA_DIR/server.properties.next"
  if pid_alive kafka; then
    if cmp -s "$KAFKA_DIR/server.properties.next" "$KAFKA_DIR/server.properties"; then
      rm -f "$KAFKA_DIR/server.properties.next"
      kafka_scram_user
      return 0
    fi
    # An older checkout's broker (without the SCRAM listener, say): the
    # services reconnect by themselves once it is back.
    say "Kafka's configuration changed: restarting Kafka"
    kafka_stop
  fi
  local port
  for port in "$KAFKA_PORT" "$KAFKA_SCRAM_PORT"; do
    if port_open "$port"; then
      die "start kafka" "" "port $port is taken by a process Nakhon did not start; stop it or point NAKHON_KAFKA_BOOTSTRAP_SERVERS at your own Kafka"
    fi
  done
  mv "$KAFKA_DIR/server.properties.next" "$KAFKA_DIR/server.properties"
  if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
    say "formatting Kafka's KRaft storage"
    kafka_tool kafka.tools.StorageTool format -t "$(kafka_tool kafka.tools.StorageTool random-uuid)" \
        -c "$KAFKA_DIR/server.properties" >"$LOGS/kafka-format.log" 2>&1 \
      || die "format kafka storage (kafka.tools.StorageTool)" "$LOGS/kafka-format.log" "storage format failed"
  fi
  setsid "${KAFKA_JAVA[@]}" kafka.Kafka "$KAFKA_DIR/server.properties" \
    >>"$LOGS/kafka.log" 2>&1 < /dev/null &
  echo $! > "$RUN/kafka.pid"
  wait_ready kafka 120 "$LOGS/kafka.log" port_open "$KAFKA_PORT"
  wait_ready kafka 120 "$LOGS/kafka.log" port_open "$KAFKA_SCRAM_PORT"
  wait_ready kafka 120 "$LOGS/kafka.log" kafka_topics --list
  kafka_create_topics
  kafka_scram_user
}

# kafka_scram_user: the SCRAM-SHA-512 user the SASL_SSL listener accepts. Its
# password is generated once into $ENV_FILE and handed to Kafka's ConfigCommand
# in a file (mode 600, removed afterwards), never on a command line. The
# credential is (re)applied only when the password or the cluster is new: a
# stamp keeps `make up` from starting a JVM tool every time.
kafka_scram_user() {
  local props="$KAFKA_DIR/scram-user.properties" stamp="$KAFKA_DIR/scram-user.sha256"
  local log="$LOGS/kafka-scram.log" sum
  (umask 077; "$REPO/.venv/bin/python" - "$ENV_FILE" "$props" "$KAFKA_SCRAM_USER" <<'PY'
import re
import secrets
import sys
from pathlib import Path

from nakhon.env_file import read_env_file, update_env_file

env_file, props, user = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
env = read_env_file(env_file)
password = env.get("NAKHON_KAFKA_SASL_PASSWORD", "")
if env.get("NAKHON_KAFKA_SASL_USERNAME") != user or not password:
    password = secrets.token_urlsafe(32)
    update_env_file(
        env_file, {"NAKHON_KAFKA_SASL_USERNAME": user, "NAKHON_KAFKA_SASL_PASSWORD": password}
    )
if not re.fullmatch(r"[A-Za-z0-9_-]{16,}", password):
    sys.exit(f"NAKHON_KAFKA_SASL_PASSWORD in {env_file}: use 16 or more letters, digits, - or _")
# A properties file: the value without the brackets --add-config wants.
props.write_text(f"SCRAM-SHA-512=password={password}\n", encoding="utf-8")
PY
  ) >>"$log" 2>&1 || die "generate Kafka's SCRAM password" "$log" "could not write $ENV_FILE"
  chmod 700 "$SECRETS"
  sum="$(cat "$props" "$KAFKA_DIR/data/meta.properties" | grep -v '^#' | sha256sum | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$sum" ]]; then rm -f "$props"; return 0; fi
  say "creating Kafka's SCRAM-SHA-512 user $KAFKA_SCRAM_USER (password in ${ENV_FILE#"$REPO"/})"
  # The tool repeats a value it cannot parse: keep the password out of the log.
  if ! kafka_tool kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter \
      --entity-type users --entity-name "$KAFKA_SCRAM_USER" --add-config-file "$props" 2>&1 \
      | sed -E 's/password=[^],[:space:]]*/password=(redacted)/g' >>"$log"; then
    rm -f "$props"
    die "create Kafka's SCRAM user (kafka.admin.ConfigCommand)" "$log" "the broker refused the credential"
  fi
  rm -f "$props"
  echo "$sum" > "$stamp"
}

kafka_topics() {
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" "$@"
}

kafka_create_topics() {
  local existing t
  existing="$(kafka_topics --list 2>>"$LOGS/kafka-topics.log")"
  local retention
  for t in "${KAFKA_TOPICS[@]}"; do
    grep -qx "$t" <<<"$existing" && continue
    case "$t" in
      nakhon.raw) retention=(--config "retention.ms=$((KAFKA_RAW_RETENTION_DAYS * 86400000))") ;;
      nakhon.deadletter) retention=(--config "retention.ms=$((KAFKA_DEADLETTER_RETENTION_DAYS * 86400000))") ;;
      *) retention=() ;;
    esac
    kafka_topics --create --if-not-exists --topic "$t" --partitions "$KAFKA_PARTITIONS" \
        --replication-factor "$KAFKA_REPLICATION_FACTOR" \
        --config "min.insync.replicas=$KAFKA_MIN_INSYNC_REPLICAS" "${retention[@]}" \
        >>"$LOGS/kafka-topics.log" 2>&1 \
      || die "create kafka topic $t" "$LOGS/kafka-topics.log" "TopicCommand failed"
  done
}

kafka_stop() {
  stop_pid kafka 60
}

kafka_status() {
  if pid_alive kafka && port_open "$KAFKA_PORT"; then
    local v; v="$(ls "$KAFKA_LIBS" | sed -n 's/^kafka_2.13-\(.*\)\.jar$/\1/p')"
    echo "kafka       running  127.0.0.1:$KAFKA_PORT, SCRAM-SHA-512 over TLS :$KAFKA_SCRAM_PORT  Apache Kafka $v (KRaft, one node), topics: ${KAFKA_TOPICS[*]}"
  else
    echo "kafka       stopped"
  fi
}
