#!/usr/bin/env bash
# Runs every first-time build path of the project's setup scripts against an EMPTY cache, as on a
# fresh machine: the Kafka broker's jars and a broker start/stop (scripts/kafka.sh), Beam's Kafka
# expansion service, Prism (scripts/prism.sh), the Flink distribution (deploy/flink/cluster.sh home)
# and PostgreSQL's binaries (scripts/postgres.sh). Each must succeed and leave what it promises.
#
#   scripts/check_fresh_setup.sh          # a temporary RISKPIPE_CACHE, removed afterwards
#
# To stay fast it reuses the download caches of the usual cache (${RISKPIPE_CACHE:-~/.cache/riskpipe}):
# the Maven repository (RISKPIPE_M2) and Go's module and build caches (RISKPIPE_GOMODCACHE,
# RISKPIPE_GOCACHE), plus pip's own cache for Flink's packages. The build and install logic runs in
# full. Run the whole suite on an empty cache with RISKPIPE_CACHE=$(mktemp -d) ./run_tests.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${RISKPIPE_CACHE:-$HOME/.cache/riskpipe}"
FRESH="$(mktemp -d "${TMPDIR:-/tmp}/riskpipe-fresh-cache-XXXXXX")"
KAFKA_STATE="$(mktemp -d "${TMPDIR:-/tmp}/riskpipe-fresh-kafka-XXXXXX")"
cleanup() {
  RISKPIPE_CACHE="$FRESH" RISKPIPE_KAFKA_STATE="$KAFKA_STATE" "$ROOT/scripts/kafka.sh" stop >/dev/null 2>&1 || true
  rm -rf "$FRESH" "$KAFKA_STATE"
}
trap cleanup EXIT
export RISKPIPE_CACHE="$FRESH" RISKPIPE_KAFKA_STATE="$KAFKA_STATE"
[[ -d "$SHARED/m2" ]] && export RISKPIPE_M2="$SHARED/m2"
[[ -d "$SHARED/prism/gopath/pkg/mod" ]] && export RISKPIPE_GOMODCACHE="$SHARED/prism/gopath/pkg/mod"
[[ -d "$SHARED/prism/gocache" ]] && export RISKPIPE_GOCACHE="$SHARED/prism/gocache"

step() { echo "fresh-setup: $*" >&2; }
fail() { echo "fresh-setup: FAILED: $*" >&2; exit 1; }

step "kafka.sh start on an empty cache (builds the broker's jars and the expansion service)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
address="$("$ROOT/scripts/kafka.sh" start --port "$port")" || fail "scripts/kafka.sh start"
[[ "$address" == "127.0.0.1:$port" ]] || fail "kafka.sh start printed '$address'"
jar="$("$ROOT/scripts/kafka.sh" expansion-jar --cached)" || fail "the expansion service jar is not in the cache"
[[ "$jar" == "$FRESH"/* && -s "$jar" ]] || fail "expansion jar $jar"
ls "$(dirname "$jar")"/jamm-*.jar >/dev/null || fail "no jamm jar beside $jar"
"$ROOT/scripts/kafka.sh" stop || fail "scripts/kafka.sh stop"

step "prism.sh on an empty cache"
prism="$("$ROOT/scripts/prism.sh")" || fail "scripts/prism.sh"
[[ "$prism" == "$FRESH"/* && -x "$prism" ]] || fail "prism binary $prism"

step "deploy/flink/cluster.sh home on an empty cache"
flink="$("$ROOT/deploy/flink/cluster.sh" home)" || fail "deploy/flink/cluster.sh home"
[[ "$flink" == "$FRESH"/* && -x "$flink/bin/jobmanager.sh" && -d "$flink/lib" ]] || fail "Flink home $flink"

step "postgres.sh"
pg="$("$ROOT/scripts/postgres.sh")" || fail "scripts/postgres.sh"
[[ -x "$pg/initdb" && -x "$pg/postgres" ]] || fail "PostgreSQL binaries in $pg"

step "every first-time path worked"
