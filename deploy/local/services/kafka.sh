# Apache Kafka 4.x as one KRaft node (broker + controller) on 127.0.0.1:9092.
# The jars come from Maven Central through Maven (its ~/.m2 repository is the
# cache: a second install downloads nothing); the storage is formatted with the
# broker's own StorageTool and the broker runs as its own main class.

KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
KAFKA_DIR="$STATE/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_HEAP="${NAKHON_KAFKA_HEAP:-512m}"
KAFKA_PARTITIONS="${NAKHON_KAFKA_PARTITIONS:-6}"
KAFKA_TOPICS=(nakhon.raw nakhon.readings nakhon.deadletter)

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

kafka_write_config() {
  mkdir -p "$KAFKA_DIR/data"
  cat > "$KAFKA_DIR/server.properties" <<CONF
# Written by deploy/local/services/kafka.sh; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
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
  if pid_alive kafka; then return 0; fi
  if port_open "$KAFKA_PORT"; then
    die "start kafka" "" "port $KAFKA_PORT is taken by a process Nakhon did not start; stop it or point NAKHON_KAFKA_BOOTSTRAP_SERVERS at your own Kafka"
  fi
  kafka_write_config
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
  wait_ready kafka 120 "$LOGS/kafka.log" kafka_topics --list
  kafka_create_topics
}

kafka_topics() {
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" "$@"
}

kafka_create_topics() {
  local existing t
  existing="$(kafka_topics --list 2>>"$LOGS/kafka-topics.log")"
  for t in "${KAFKA_TOPICS[@]}"; do
    grep -qx "$t" <<<"$existing" && continue
    kafka_topics --create --if-not-exists --topic "$t" --partitions "$KAFKA_PARTITIONS" \
        --replication-factor 1 >>"$LOGS/kafka-topics.log" 2>&1 \
      || die "create kafka topic $t" "$LOGS/kafka-topics.log" "TopicCommand failed"
  done
}

kafka_stop() {
  stop_pid kafka 60
}

kafka_status() {
  if pid_alive kafka && port_open "$KAFKA_PORT"; then
    local v; v="$(ls "$KAFKA_LIBS" | sed -n 's/^kafka_2.13-\(.*\)\.jar$/\1/p')"
    echo "kafka       running  127.0.0.1:$KAFKA_PORT  Apache Kafka $v (KRaft, one node), topics: ${KAFKA_TOPICS[*]}"
  else
    echo "kafka       stopped"
  fi
}
