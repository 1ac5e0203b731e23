#!/usr/bin/env bash
# A real Apache Kafka broker (4.x, KRaft mode, one node) on 127.0.0.1 from Maven Central's jars, and
# the Java parts of the job's Kafka I/O (Beam's KafkaIO expansion service and Java SDK worker).
#
#   scripts/kafka.sh start [--port N]     start a broker (data in a temporary folder); prints HOST:PORT
#                                         (and builds the expansion service jar the first time)
#   scripts/kafka.sh stop [--keep-data]   stop the broker that `start` started and delete its data
#                                         (--keep-data: the next `start` brings the same broker back)
#   scripts/kafka.sh status               prints HOST:PORT when a broker started here is running
#   scripts/kafka.sh produce TOPIC FILE.. one Kafka record per JSON line, keyed by transaction_id
#   scripts/kafka.sh consume TOPIC [--max N] [--idle S]   print a topic's records as JSON lines
#   scripts/kafka.sh broker-libs          build the broker's jar folder (once); prints its path
#   scripts/kafka.sh expansion-jar [--cached]  build the expansion service jar (once); prints its path
#                                         (--cached: only find it, exit 1 when it is not built)
#
# Caches (reused; a second call is immediate): ${RISKPIPE_CACHE:-~/.cache/riskpipe}/kafka/<version>/lib,
# .../beam-kafka-expansion/<beam version>-<source hash>/, and the Maven repository .../m2. Maven asks
# Maven Central only (scripts/kafka/maven-settings.xml).
# The running broker's state (pid, address, data, log): ${RISKPIPE_KAFKA_STATE:-${TMPDIR:-/tmp}/riskpipe-kafka-$UID}.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_VERSION=4.4.0
BEAM_JAVA_VERSION=2.73.0
CACHE="${RISKPIPE_CACHE:-$HOME/.cache/riskpipe}"
# RISKPIPE_M2: a Maven repository to reuse (the empty-cache check shares the downloads, not the builds).
M2="${RISKPIPE_M2:-$CACHE/m2}"
STATE="${RISKPIPE_KAFKA_STATE:-${TMPDIR:-/tmp}/riskpipe-kafka-$(id -u)}"
MVN=(mvn -q -B -s "$ROOT/scripts/kafka/maven-settings.xml" -Dmaven.repo.local="$M2")

die() { echo "kafka: $*" >&2; exit 1; }
need_java() {
  command -v java >/dev/null 2>&1 || die "Java 17 or later is required (apt-get install openjdk-17-jre-headless)"
  command -v mvn >/dev/null 2>&1 || die "Maven is required to fetch the jars (apt-get install maven)"
}

broker_libs() {
  local lib="$CACHE/kafka/$KAFKA_VERSION/lib"
  if [[ ! -f "$lib/.complete" ]]; then
    need_java
    echo "kafka: fetching Apache Kafka $KAFKA_VERSION's jars from Maven Central (once)" >&2
    rm -rf "$lib" && mkdir -p "$lib"
    "${MVN[@]}" -f "$ROOT/scripts/kafka/broker/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$lib" >&2
    touch "$lib/.complete"
  fi
  echo "$lib"
}

expansion_jar() {
  local src="$ROOT/scripts/kafka/expansion-service"
  local hash
  hash="$(cd "$src" && find . -type f | sort | xargs sha256sum | sha256sum | cut -c1-12)"
  local dir="$CACHE/beam-kafka-expansion/$BEAM_JAVA_VERSION-$hash"
  local jar="$dir/beam-kafka-expansion-service.jar"
  if [[ ! -f "$dir/.complete" ]]; then
    [[ "${1:-}" != "--cached" ]] || die "the Kafka expansion service is not built (scripts/kafka.sh expansion-jar builds it)"
    need_java
    echo "kafka: building Beam's Kafka expansion service $BEAM_JAVA_VERSION from Maven Central (once, about 90 s)" >&2
    # The build folder is removed by the subshell that uses it (a RETURN trap set here would
    # outlive this function and fire again in its caller, where `build` is not set).
    local build
    build="$(mktemp -d)"
    (
      trap 'rm -rf "$build"' EXIT
      cp -r "$src/." "$build/"
      cd "$build"
      "${MVN[@]}" package >&2
      mkdir -p "$dir"
      cp "$build/target/beam-kafka-expansion-service-$BEAM_JAVA_VERSION.jar" "$jar"
    )
    # Beam's Java harness measures memory with jamm, which Beam leaves to the environment.
    "${MVN[@]}" dependency:copy -Dartifact=com.github.jbellis:jamm:0.4.0 -DoutputDirectory="$dir" >&2
    touch "$dir/.complete"
  fi
  echo "$jar"
}

running_pid() {
  [[ -f "$STATE/broker.pid" ]] || return 1
  local pid
  pid="$(cat "$STATE/broker.pid")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local port=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --port) port="$2"; shift 2 ;;
      *) die "start: unknown argument $1" ;;
    esac
  done
  if running_pid >/dev/null; then
    cat "$STATE/bootstrap"
    return 0
  fi
  local lib
  lib="$(broker_libs)"
  expansion_jar >/dev/null  # the job's KafkaIO needs it; built once, here rather than in a job
  if [[ -f "$STATE/kept" ]]; then  # stopped with --keep-data: the same broker again, same data and port
    rm -f "$STATE/kept"
    launch "$lib" "$(cut -d: -f2 "$STATE/bootstrap")"
    return
  fi
  [[ -n "$port" ]] || port=9092
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port on 127.0.0.1 is taken; give another with --port"
  fi
  local controller
  controller="$(free_port)"
  rm -rf "$STATE" && mkdir -p "$STATE/data"
  cat >"$STATE/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$STATE/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
EOF
  cat >"$STATE/log4j2.properties" <<EOF
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$STATE/broker.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
EOF
  java -cp "$lib/*" kafka.tools.StorageTool format -t "$(cluster_id)" \
    -c "$STATE/server.properties" >"$STATE/format.log" 2>&1 || { cat "$STATE/format.log" >&2; die "formatting the log folder failed"; }
  launch "$lib" "$port"
}

# New cluster ids (one, or $1): 16 random bytes in URL-safe base64, never starting with '-', which
# the storage tool's argument parser would take for an option (Kafka's own Uuid.randomUuid avoids it).
cluster_id() {
  python3 - "${1:-1}" <<'PY'
import base64, sys, uuid
wanted = int(sys.argv[1])
while wanted:
    text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not text.startswith("-"):
        print(text)
        wanted -= 1
PY
}

launch() {
  local lib="$1" port="$2"
  nohup java -Xmx512m -Dlog4j2.configurationFile="$STATE/log4j2.properties" -cp "$lib/*" kafka.Kafka "$STATE/server.properties" \
    >"$STATE/stdout.log" 2>&1 &
  echo $! >"$STATE/broker.pid"
  echo "127.0.0.1:$port" >"$STATE/bootstrap"
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      cat "$STATE/bootstrap"
      return 0
    fi
    running_pid >/dev/null || { tail -20 "$STATE/stdout.log" "$STATE/broker.log" >&2 2>/dev/null; die "the broker exited while starting"; }
    sleep 0.1
  done
  stop
  die "the broker did not open port $port within 30 s"
}

stop() {
  local keep=""
  [[ "${1:-}" == "--keep-data" ]] && keep=1
  local pid
  if pid="$(running_pid)"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    echo "kafka: stopped the broker at $(cat "$STATE/bootstrap")" >&2
  fi
  if [[ -n "$keep" && -f "$STATE/server.properties" ]]; then
    touch "$STATE/kept"
  else
    rm -rf "$STATE"
  fi
}

python_tool() {
  "$ROOT/scripts/bootstrap.sh"
  bootstrap="$(cat "$STATE/bootstrap" 2>/dev/null)" || die "no broker is running (scripts/kafka.sh start)"
  exec "$ROOT/.venv/bin/python" -m tools.kafka "$@" --bootstrap_servers "${KAFKA_BOOTSTRAP_SERVERS:-$bootstrap}"
}

command="${1:-}"
[[ $# -gt 0 ]] && shift
case "$command" in
  start) start "$@" ;;
  stop) stop "$@" ;;
  status) running_pid >/dev/null && cat "$STATE/bootstrap" || { echo "kafka: no broker is running" >&2; exit 1; } ;;
  produce)
    [[ $# -ge 2 ]] || die "usage: scripts/kafka.sh produce TOPIC FILE..."
    topic="$1"; shift
    python_tool produce --topic "$topic" "$@" ;;
  consume)
    [[ $# -ge 1 ]] || die "usage: scripts/kafka.sh consume TOPIC [--max N] [--idle SECONDS]"
    topic="$1"; shift
    python_tool consume --topic "$topic" "$@" ;;
  broker-libs) broker_libs ;;
  expansion-jar) expansion_jar "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | grep '^#' >&2; exit 2 ;;
esac
