#!/usr/bin/env bash
# A real standalone Flink cluster (one JobManager, one TaskManager) on 127.0.0.1, for submitting the
# scoring job with Beam's FlinkRunner (deploy/flink/submit.sh).
#
#   deploy/flink/cluster.sh start    # prints the REST address once the cluster answers
#   deploy/flink/cluster.sh status   # the REST address and the cluster's overview, or exit 1
#   deploy/flink/cluster.sh check    # runs a small Flink job (check/ClusterCheck.java) on all the slots
#   deploy/flink/cluster.sh stop     # stops both processes and waits until they are gone
#   deploy/flink/cluster.sh home     # prints the Flink home (fetched first when missing)
#
# Flink comes from PyPI: the apache-flink wheel holds bin/ and conf/, the apache-flink-libraries
# package the jars (lib/, opt/, plugins/). Both are fetched once with `pip download --no-deps` (never
# installed: apache-flink pins an old Beam) and unpacked into a Flink home under
# ${RISKPIPE_CACHE:-~/.cache/riskpipe}/flink/<version>. Java 11 or newer runs it (17 here).
#
# Settings (environment):
#   FLINK_VERSION       deploy/flink/versions.sh (1.20.5); submit.sh passes its minor version
#   FLINK_REST_PORT     8081        FLINK_RPC_PORT   6123
#   FLINK_SLOTS         2 task slots (the job's --parallelism must not exceed them)
#   FLINK_JM_MEMORY     1024m       FLINK_TM_MEMORY  1536m   (process sizes)
#   FLINK_CLUSTER_DIR   the cluster's conf, logs and pid files
#                       (default ${TMPDIR:-/tmp}/riskpipe-flink-<uid>-<rest port>)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=versions.sh
source "$ROOT/deploy/flink/versions.sh"
VERSION="${FLINK_VERSION:-$FLINK_VERSION_DEFAULT}"
CACHE="${RISKPIPE_CACHE:-$HOME/.cache/riskpipe}/flink"
HOME_DIR="$CACHE/$VERSION"
REST_PORT="${FLINK_REST_PORT:-8081}"
RPC_PORT="${FLINK_RPC_PORT:-6123}"
SLOTS="${FLINK_SLOTS:-2}"
STATE="${FLINK_CLUSTER_DIR:-${TMPDIR:-/tmp}/riskpipe-flink-$(id -u)-$REST_PORT}"
REST="http://127.0.0.1:$REST_PORT"
START_TIMEOUT="${FLINK_START_TIMEOUT:-120}"

say() { echo "flink: $*" >&2; }

python_bin() {
  if [[ -x "$ROOT/.venv/bin/python" ]]; then echo "$ROOT/.venv/bin/python"; else command -v python3; fi
}

fetch_home() {
  [[ -x "$HOME_DIR/bin/jobmanager.sh" && -f "$HOME_DIR/lib/flink-dist-$VERSION.jar" ]] && return 0
  local py tmp
  py="$(python_bin)"
  mkdir -p "$CACHE/downloads"
  say "fetching Flink $VERSION from PyPI (apache-flink, apache-flink-libraries; about 235 MB, once)"
  "$py" -m pip download --quiet --no-deps --dest "$CACHE/downloads" \
    "apache-flink==$VERSION" "apache-flink-libraries==$VERSION" >&2
  tmp="$(mktemp -d "$CACHE/.unpack-XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  "$py" - "$CACHE/downloads" "$VERSION" "$tmp" <<'PY'
import glob, os, shutil, sys, tarfile, zipfile
downloads, version, out = sys.argv[1:]
home = os.path.join(out, "home")
wheel = glob.glob(os.path.join(downloads, f"apache_flink-{version}-*.whl"))
libs = glob.glob(os.path.join(downloads, f"apache_flink_libraries-{version}*"))
if not wheel or not libs:
    sys.exit(f"flink: the downloaded packages for {version} are not in {downloads}")
with zipfile.ZipFile(wheel[0]) as z:  # bin/, conf/, log/
    for name in z.namelist():
        for part in ("bin", "conf", "log"):
            if name.startswith(f"pyflink/{part}/") and not name.endswith("/"):
                target = os.path.join(home, name[len("pyflink/"):])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with z.open(name) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
if libs[0].endswith(".whl"):  # newer releases ship the jars as a wheel, older as an sdist
    with zipfile.ZipFile(libs[0]) as z:
        z.extractall(os.path.join(out, "libs"))
else:
    with tarfile.open(libs[0]) as t:
        t.extractall(os.path.join(out, "libs"), filter="data")
deps = glob.glob(os.path.join(out, "libs", "**", "lib", f"flink-dist*{version}.jar"), recursive=True)
if not deps:
    sys.exit(f"flink: no flink-dist jar in {libs[0]}")
root = os.path.dirname(os.path.dirname(deps[0]))
for part in os.listdir(root):
    source, target = os.path.join(root, part), os.path.join(home, part)
    if os.path.isdir(source):
        shutil.copytree(source, target, dirs_exist_ok=True)
for name in os.listdir(os.path.join(home, "bin")):
    os.chmod(os.path.join(home, "bin", name), 0o755)
PY
  rm -rf "$HOME_DIR"
  mv "$tmp/home" "$HOME_DIR"
  rm -rf "$tmp"
  trap - EXIT
  say "Flink $VERSION is in $HOME_DIR"
}

answers() { curl -fsS --max-time 2 "$REST/overview" 2>/dev/null; }

write_conf() {
  mkdir -p "$STATE/conf" "$STATE/log" "$STATE/run" "$STATE/tmp"
  cp "$HOME_DIR"/conf/log4j*.properties "$HOME_DIR"/conf/logback*.xml "$STATE/conf/"
  echo "127.0.0.1:$REST_PORT" >"$STATE/conf/masters"
  echo "127.0.0.1" >"$STATE/conf/workers"
  # Flink's own module options for Java 17, from its default configuration.
  local java_opts
  java_opts="$(sed -n 's/^ *all: *//p' "$HOME_DIR/conf/config.yaml" | head -1)"
  cat >"$STATE/conf/config.yaml" <<YAML
env:
  java:
    opts:
      all: $java_opts
  log:
    dir: $STATE/log
  pid:
    dir: $STATE/run
io:
  tmp:
    dirs: $STATE/tmp
jobmanager:
  bind-host: 127.0.0.1
  rpc:
    address: 127.0.0.1
    port: $RPC_PORT
  memory:
    process:
      size: ${FLINK_JM_MEMORY:-1024m}
  execution:
    failover-strategy: region
taskmanager:
  bind-host: 127.0.0.1
  host: 127.0.0.1
  numberOfTaskSlots: $SLOTS
  memory:
    process:
      size: ${FLINK_TM_MEMORY:-1536m}
parallelism:
  default: 1
rest:
  address: 127.0.0.1
  bind-address: 127.0.0.1
  port: $REST_PORT
blob:
  server:
    port: "0"
YAML
}

flink_env() { env FLINK_CONF_DIR="$STATE/conf" FLINK_LOG_DIR="$STATE/log" FLINK_PID_DIR="$STATE/run" "$@"; }

pids() { cat "$STATE"/run/*.pid 2>/dev/null | tr -s '\n' ' ' || true; }

start() {
  if ! command -v java >/dev/null 2>&1; then
    say "Java 11 or newer is required (apt-get install openjdk-17-jre-headless)"
    exit 1
  fi
  if answers >/dev/null; then
    if [[ -n "$(pids)" ]]; then
      say "already running"
      echo "$REST"
      exit 0
    fi
    say "something else already answers on $REST; set FLINK_REST_PORT"
    exit 1
  fi
  fetch_home
  write_conf
  flink_env "$HOME_DIR/bin/jobmanager.sh" start >&2
  flink_env "$HOME_DIR/bin/taskmanager.sh" start >&2
  local deadline=$((SECONDS + START_TIMEOUT)) overview
  while ((SECONDS < deadline)); do
    overview="$(answers || true)"
    # Ready when the TaskManager has registered its slots with the JobManager (the TaskManager is
    # listed a moment before its slots are counted).
    if [[ "$overview" =~ \"taskmanagers\":[1-9] && "$overview" =~ \"slots-total\":[1-9] ]]; then
      echo "$REST"
      return 0
    fi
    sleep 1
  done
  say "the cluster did not answer on $REST within ${START_TIMEOUT}s; its logs:"
  tail -n 30 "$STATE"/log/*.log >&2 || true
  stop
  exit 1
}

stop() {
  local running pid deadline
  running="$(pids)"
  if [[ -z "$running" ]]; then
    say "no cluster is running from $STATE"
    return 0
  fi
  if [[ -x "$HOME_DIR/bin/taskmanager.sh" ]]; then
    flink_env "$HOME_DIR/bin/taskmanager.sh" stop-all >&2 || true
    flink_env "$HOME_DIR/bin/jobmanager.sh" stop-all >&2 || true
  fi
  deadline=$((SECONDS + 30))
  for pid in $running; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      say "process $pid did not stop; killing it"
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$STATE"/run/*.pid
  say "stopped"
}

check() {
  # Compiled once per source with the Flink home's own jars (a JDK is needed), then run with
  # Flink's client at the cluster's parallelism; Flink's client exits non-zero if the job fails.
  command -v javac >/dev/null 2>&1 || { say "a JDK (javac) is required for the check job"; exit 1; }
  answers >/dev/null || { say "no cluster answers on $REST"; exit 1; }
  local src="$ROOT/deploy/flink/check/ClusterCheck.java" hash jar build
  hash="$(sha256sum "$src" | cut -c1-12)"
  jar="$CACHE/check/$VERSION-$hash/cluster-check.jar"
  if [[ ! -f "$jar" ]]; then
    build="$(mktemp -d)"
    javac -d "$build" -cp "$HOME_DIR/lib/*" "$src" >&2
    mkdir -p "$(dirname "$jar")"
    jar cfe "$jar.tmp" ClusterCheck -C "$build" . && mv "$jar.tmp" "$jar"
    rm -rf "$build"
  fi
  flink_env "$HOME_DIR/bin/flink" run -m "127.0.0.1:$REST_PORT" -p "$SLOTS" "$jar" "${FLINK_CHECK_RECORDS:-100000}"
}

status() {
  local overview
  if overview="$(answers)"; then
    echo "$REST"
    echo "$overview"
  else
    say "no cluster answers on $REST"
    exit 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  check) check ;;
  home) fetch_home && echo "$HOME_DIR" ;;
  *)
    echo "usage: $0 start|stop|status|check|home" >&2
    exit 2
    ;;
esac
