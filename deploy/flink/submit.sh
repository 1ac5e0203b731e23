#!/usr/bin/env bash
# Submits the scoring job to a Flink cluster with Beam's FlinkRunner, and waits for it to finish
# (a streaming job: until it drains). The job's own options follow, as for python -m pipeline.runner:
#
#   deploy/flink/cluster.sh start
#   deploy/flink/submit.sh --config config.yaml --output_dir output/flink
#   FLINK_CHECKPOINTING_INTERVAL=10000 deploy/flink/submit.sh --config config.yaml --source kafka ...
#
# Settings (environment); an option given on the command line wins over the one set here:
#   FLINK_MASTER            the cluster's REST address (default 127.0.0.1:${FLINK_REST_PORT:-8081})
#   FLINK_VERSION           the cluster's Flink release (deploy/flink/versions.sh); --flink_version is
#                           its minor version, and the job server must be built for it
#   FLINK_JOB_SERVER_JAR    Beam's job-server jar beam-runners-flink-<minor>-job-server-<beam>.jar; else
#                           the cached one, else resolved through Maven once (python -m tools.flink jar)
#   FLINK_PARALLELISM       2 (at most the cluster's task slots)
#   FLINK_ENVIRONMENT       LOOPBACK: the Python stages run in this process, which the cluster must
#                           reach (a cluster on this machine). In production: EXTERNAL with a Beam
#                           worker pool beside each TaskManager, FLINK_ENVIRONMENT_CONFIG=localhost:50000
#   FLINK_CHECKPOINTING_INTERVAL   milliseconds; a streaming job on Flink needs it (the job refuses
#                           to start without it)
#   FLINK_SUBMIT_PRINT=1    print the command, one argument a line, instead of running it
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=versions.sh
source "$ROOT/deploy/flink/versions.sh"
VERSION="${FLINK_VERSION:-$FLINK_VERSION_DEFAULT}"
MINOR="$(echo "$VERSION" | cut -d. -f1,2)"
PY="$ROOT/.venv/bin/python"
if [[ ! -x "$PY" ]]; then
  "$ROOT/scripts/bootstrap.sh" >&2
fi
args=(
  --runner=FlinkRunner
  "--flink_master=${FLINK_MASTER:-127.0.0.1:${FLINK_REST_PORT:-8081}}"
  "--flink_version=$MINOR"
  "--parallelism=${FLINK_PARALLELISM:-2}"
  "--environment_type=${FLINK_ENVIRONMENT:-LOOPBACK}"
)
if [[ -n "${FLINK_ENVIRONMENT_CONFIG:-}" ]]; then
  args+=("--environment_config=$FLINK_ENVIRONMENT_CONFIG")
fi
if [[ -n "${FLINK_CHECKPOINTING_INTERVAL:-}" ]]; then
  args+=("--checkpointing_interval=$FLINK_CHECKPOINTING_INTERVAL")
fi
if [[ " $* " != *" --flink_job_server_jar"* ]]; then
  if ! jar="$("$PY" -m tools.flink jar --flink_version "$MINOR")"; then
    echo "flink: cannot submit without Beam's Flink job server (see above)" >&2
    exit 2
  fi
  args+=("--flink_job_server_jar=$jar")
fi
cd "$ROOT"
if [[ "${FLINK_SUBMIT_PRINT:-}" == 1 ]]; then
  printf '%s\n' "$PY" -m pipeline.runner "${args[@]}" "$@"
  exit 0
fi
exec "$PY" -m pipeline.runner "${args[@]}" "$@"
