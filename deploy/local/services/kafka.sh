# Apache Kafka 4.x in KRaft mode: one node (broker + controller) by default, or
# a replicated cluster of three (NAKHON_KAFKA_BROKERS=3 make up). The jars come
# from Maven Central through Maven (its ~/.m2 repository is the cache: a second
# install downloads nothing); the storage is formatted with the broker's own
# StorageTool and each node runs as the broker's own main class.
#
# Node i (1..3) listens on loopback at $KAFKA_PORT+i-1 (PLAINTEXT, the
# services' and the tests' default), $KAFKA_SCRAM_PORT+i-1 (SASL_SSL,
# SCRAM-SHA-512 over TLS with a broker certificate signed by the local CA,
# .nakhon/tls/ca.crt) and $KAFKA_CONTROLLER_PORT+i-1 (the controller quorum).
# The SCRAM user, `nakhon`, gets a password generated once per checkout, kept
# in $ENV_FILE as NAKHON_KAFKA_SASL_USERNAME/_PASSWORD (docs/security.md,
# "Kafka"); `make up` also writes there the clients' bootstrap list,
# NAKHON_KAFKA_BOOTSTRAP_SERVERS (every node, so a client starts while one is down).
#
# The one node keeps its data in .nakhon/kafka/data; the cluster is another
# cluster, with its data in .nakhon/kafka/cluster/node-<i>. Switching between
# them stops the other (its data is kept for when you switch back); records and
# consumer offsets do not move across.

KAFKA_SCRAM_USER=nakhon
KAFKA_DIR="$STATE/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_HEAP="${NAKHON_KAFKA_HEAP:-512m}"
KAFKA_PARTITIONS="${NAKHON_KAFKA_PARTITIONS:-6}"
# How many nodes: 1 (the default) or 3, a cluster that survives losing one.
KAFKA_BROKERS="${NAKHON_KAFKA_BROKERS:-1}"
case "$KAFKA_BROKERS" in
  1|3) ;;
  *) die "kafka" "" "NAKHON_KAFKA_BROKERS=$KAFKA_BROKERS: use 1 (one node) or 3 (a replicated cluster)" ;;
esac
# The topics' durability: one copy on one node; on three, 3 copies and 2 in
# sync (a record acknowledged with acks=all is then on two brokers before the
# producer moves on, and writes go on while any one broker is down).
KAFKA_REPLICATION_FACTOR="${NAKHON_KAFKA_REPLICATION_FACTOR:-$(( KAFKA_BROKERS >= 3 ? 3 : 1 ))}"
KAFKA_MIN_INSYNC_REPLICAS="${NAKHON_KAFKA_MIN_INSYNC_REPLICAS:-$(( KAFKA_BROKERS >= 3 ? 2 : 1 ))}"
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

# kafka_node_name I: the name of node I's pid file and log (kafka.pid and
# kafka.log for the one node; kafka-I.pid and kafka-I.log in the cluster).
kafka_node_name() {
  if (( KAFKA_BROKERS == 1 )); then echo kafka; else echo "kafka-$1"; fi
}

# kafka_node_dir I: node I's folder (its server.properties and data/).
kafka_node_dir() {
  if (( KAFKA_BROKERS == 1 )); then echo "$KAFKA_DIR"; else echo "$KAFKA_DIR/cluster/node-$1"; fi
}

kafka_nodes() { seq 1 "$KAFKA_BROKERS"; }

# kafka_write_config FILE I: node I's configuration, as this script wants it now.
kafka_write_config() {
  local file="$1" i="$2" dir voters="" n
  dir="$(kafka_node_dir "$i")"
  mkdir -p "$dir/data"
  for n in $(kafka_nodes); do
    voters+="${voters:+,}$n@127.0.0.1:$((KAFKA_CONTROLLER_PORT + n - 1))"
  done
  local plain=$((KAFKA_PORT + i - 1)) scram=$((KAFKA_SCRAM_PORT + i - 1))
  local controller=$((KAFKA_CONTROLLER_PORT + i - 1))
  # Kafka's own records (consumer offsets, producer state) as durable as the topics.
  local internal_rf=$(( KAFKA_BROKERS >= 3 ? 3 : 1 )) internal_isr=$(( KAFKA_BROKERS >= 3 ? 2 : 1 ))
  cat > "$file" <<CONF
# Written by deploy/local/services/kafka.sh; edits are overwritten.
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$plain,CONTROLLER://127.0.0.1:$controller,SASL_SSL://127.0.0.1:$scram
advertised.listeners=PLAINTEXT://127.0.0.1:$plain,SASL_SSL://127.0.0.1:$scram
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
# SCRAM-SHA-512 over TLS on :$scram; the users' credentials live in
# the KRaft metadata (kafka_scram_user). No client certificates asked for.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_DIR/tls/broker.pem
log.dirs=$dir/data
num.partitions=$KAFKA_PARTITIONS
offsets.topic.replication.factor=$internal_rf
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=$internal_rf
transaction.state.log.min.isr=$internal_isr
share.coordinator.state.topic.replication.factor=$internal_rf
share.coordinator.state.topic.min.isr=$internal_isr
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
num.network.threads=2
num.io.threads=4
CONF
}

# kafka_bootstrap: every node's PLAINTEXT address, as clients want it.
kafka_bootstrap() {
  local n list=""
  for n in $(kafka_nodes); do list+="${list:+,}127.0.0.1:$((KAFKA_PORT + n - 1))"; done
  echo "$list"
}

# kafka_layout_alive SIZE: a node of the layout of SIZE nodes runs.
kafka_layout_alive() {
  if (( $1 == 1 )); then pid_alive kafka; else pid_alive kafka-1 || pid_alive kafka-2 || pid_alive kafka-3; fi
}

# kafka_stop_layout SIZE: stop the nodes of the layout of SIZE nodes, all at once
# (a cluster's last node would otherwise wait for a quorum that has gone).
kafka_stop_layout() {
  local names=() name pids=()
  if (( $1 == 1 )); then names=(kafka); else names=(kafka-1 kafka-2 kafka-3); fi
  for name in "${names[@]}"; do
    if [[ -f "$RUN/$name.pid" ]]; then stop_pid "$name" 60 & pids+=("$!"); fi
  done
  # Only these: `wait` alone would also wait for the daemons `up` started.
  (( ${#pids[@]} == 0 )) || wait "${pids[@]}"
}

kafka_start() {
  (( KAFKA_MIN_INSYNC_REPLICAS <= KAFKA_REPLICATION_FACTOR )) || die "start kafka" "" \
    "NAKHON_KAFKA_MIN_INSYNC_REPLICAS=$KAFKA_MIN_INSYNC_REPLICAS exceeds NAKHON_KAFKA_REPLICATION_FACTOR=$KAFKA_REPLICATION_FACTOR: no acks=all write could succeed"
  (( KAFKA_REPLICATION_FACTOR <= KAFKA_BROKERS )) || die "start kafka" "" \
    "NAKHON_KAFKA_REPLICATION_FACTOR=$KAFKA_REPLICATION_FACTOR exceeds NAKHON_KAFKA_BROKERS=$KAFKA_BROKERS: a topic cannot have more copies than brokers"
  kafka_tls
  # The other layout gives way (its data stays).
  local other=$(( KAFKA_BROKERS == 1 ? 3 : 1 )) i name dir changed=0 port starting=()
  if kafka_layout_alive "$other"; then
    say "switching Kafka from $other node(s) to $KAFKA_BROKERS: stopping the other (its data is kept)"
    kafka_stop_layout "$other"
  fi
  for i in $(kafka_nodes); do
    dir="$(kafka_node_dir "$i")"
    kafka_write_config "$dir/server.properties.next" "$i"
    if ! cmp -s "$dir/server.properties.next" "$dir/server.properties"; then changed=1; fi
  done
  if (( changed )) && kafka_layout_alive "$KAFKA_BROKERS"; then
    # A changed configuration (an older checkout's, say): the services
    # reconnect by themselves once it is back.
    say "Kafka's configuration changed: restarting Kafka"
    kafka_stop_layout "$KAFKA_BROKERS"
  fi
  # The nodes not running: all of them, or one that died or was killed (the
  # others go on serving; it catches up with them when it is back).
  for i in $(kafka_nodes); do
    pid_alive "$(kafka_node_name "$i")" || starting+=("$i")
  done
  if (( ${#starting[@]} == 0 )); then
    for i in $(kafka_nodes); do rm -f "$(kafka_node_dir "$i")/server.properties.next"; done
    kafka_publish_bootstrap
    kafka_scram_user
    return 0
  fi
  (( ${#starting[@]} == KAFKA_BROKERS )) || say "starting Kafka node(s) ${starting[*]} of $KAFKA_BROKERS"
  for i in "${starting[@]}"; do
    for port in $((KAFKA_PORT + i - 1)) $((KAFKA_SCRAM_PORT + i - 1)) $((KAFKA_CONTROLLER_PORT + i - 1)); do
      if port_open "$port"; then
        die "start kafka" "" "port $port is taken by a process Nakhon did not start; stop it or point NAKHON_KAFKA_BOOTSTRAP_SERVERS at your own Kafka"
      fi
    done
  done
  # One cluster id for every node of the layout, made once.
  local id_file="$KAFKA_DIR/cluster.id"
  (( KAFKA_BROKERS == 1 )) || id_file="$KAFKA_DIR/cluster/cluster.id"
  for i in $(kafka_nodes); do
    dir="$(kafka_node_dir "$i")"
    mv "$dir/server.properties.next" "$dir/server.properties"
    [[ " ${starting[*]} " == *" $i "* ]] || continue
    if [[ ! -f "$dir/data/meta.properties" ]]; then
      [[ -s "$id_file" ]] || kafka_tool kafka.tools.StorageTool random-uuid > "$id_file"
      say "formatting Kafka's KRaft storage (node $i of $KAFKA_BROKERS)"
      kafka_tool kafka.tools.StorageTool format -t "$(cat "$id_file")" \
          -c "$dir/server.properties" >"$LOGS/kafka-format.log" 2>&1 \
        || die "format kafka storage (kafka.tools.StorageTool)" "$LOGS/kafka-format.log" "storage format failed"
    fi
  done
  # Every node at once: a cluster's controllers need a quorum to elect a leader.
  for i in "${starting[@]}"; do
    name="$(kafka_node_name "$i")"
    setsid "${KAFKA_JAVA[@]}" kafka.Kafka "$(kafka_node_dir "$i")/server.properties" \
      >>"$LOGS/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$name.pid"
  done
  for i in "${starting[@]}"; do
    name="$(kafka_node_name "$i")"
    wait_ready "$name" 120 "$LOGS/$name.log" port_open $((KAFKA_PORT + i - 1))
    wait_ready "$name" 120 "$LOGS/$name.log" port_open $((KAFKA_SCRAM_PORT + i - 1))
  done
  name="$(kafka_node_name 1)"
  wait_ready "$name" 120 "$LOGS/$name.log" kafka_topics --list
  kafka_create_topics
  kafka_publish_bootstrap
  kafka_scram_user
}

# kafka_publish_bootstrap: NAKHON_KAFKA_BOOTSTRAP_SERVERS in $ENV_FILE, which
# the services, commands, tests and tools read (nakhon/config.py).
kafka_publish_bootstrap() {
  local log="$LOGS/kafka-scram.log"
  (umask 077; "$REPO/.venv/bin/python" - "$ENV_FILE" "$(kafka_bootstrap)" <<'PY'
import sys
from pathlib import Path

from nakhon.env_file import update_env_file

update_env_file(Path(sys.argv[1]), {"NAKHON_KAFKA_BOOTSTRAP_SERVERS": sys.argv[2]})
PY
  ) >>"$log" 2>&1 || die "write the Kafka bootstrap list" "$log" "could not write $ENV_FILE"
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
  sum="$(cat "$props" "$(kafka_node_dir 1)/data/meta.properties" | grep -v '^#' | sha256sum | cut -d' ' -f1)"
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
  kafka_stop_layout 3
  kafka_stop_layout 1
}

kafka_status() {
  local v i name up=0 nodes=""
  v="$(ls "$KAFKA_LIBS" 2>/dev/null | sed -n 's/^kafka_2.13-\(.*\)\.jar$/\1/p')"
  for i in $(kafka_nodes); do
    name="$(kafka_node_name "$i")"
    if pid_alive "$name" && port_open $((KAFKA_PORT + i - 1)); then
      up=$((up + 1)); nodes+=" :$((KAFKA_PORT + i - 1))"
    else
      nodes+=" (:$((KAFKA_PORT + i - 1)) stopped)"
    fi
  done
  if (( KAFKA_BROKERS == 1 && up == 1 )); then
    echo "kafka       running  127.0.0.1:$KAFKA_PORT, SCRAM-SHA-512 over TLS :$KAFKA_SCRAM_PORT  Apache Kafka $v (KRaft, one node), topics: ${KAFKA_TOPICS[*]}"
  elif (( KAFKA_BROKERS > 1 && up > 0 )); then
    echo "kafka       running  $up of $KAFKA_BROKERS brokers on 127.0.0.1 ($nodes ), SCRAM-SHA-512 over TLS :$KAFKA_SCRAM_PORT-$((KAFKA_SCRAM_PORT + KAFKA_BROKERS - 1))  Apache Kafka $v (KRaft), replication $KAFKA_REPLICATION_FACTOR, min in-sync $KAFKA_MIN_INSYNC_REPLICAS, topics: ${KAFKA_TOPICS[*]}"
  elif kafka_layout_alive $(( KAFKA_BROKERS == 1 ? 3 : 1 )); then
    echo "kafka       running with $(( KAFKA_BROKERS == 1 ? 3 : 1 )) node(s), not the $KAFKA_BROKERS asked for (NAKHON_KAFKA_BROKERS): make up switches"
  else
    echo "kafka       stopped"
  fi
}
