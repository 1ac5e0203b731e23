#!/usr/bin/env bash
# Asks Maven Central which Beam Flink job-server jars resolve on this machine.
# Usage: scripts/probe_flink_job_server.sh [BEAM_VERSION ...]   (default: the pinned one and older)
# Each artifact is looked for as deploy/flink/submit.sh looks for it (python -m tools.flink jar);
# jars that resolve are kept under ~/.cache/riskpipe/flink-job-server/ for the Flink runner.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || "$ROOT/scripts/bootstrap.sh" >&2
versions=("$@")
if [[ ${#versions[@]} -eq 0 ]]; then
  versions=(2.77.0 2.76.0 2.75.0 2.74.0 2.73.0 2.72.0 2.71.0 2.70.0)
fi
found=0
for beam in "${versions[@]}"; do
  for flink in 2.2 2.1 2.0 1.20 1.19; do
    artifact="org.apache.beam:beam-runners-flink-${flink}-job-server:${beam}:jar"
    if (cd "$ROOT" && env -u FLINK_JOB_SERVER_JAR "$PY" -m tools.flink jar --flink_version "$flink" --beam "$beam") \
      >/dev/null 2>&1; then
      echo "resolves: $artifact"
      found=1
    else
      echo "missing:  $artifact"
    fi
  done
done
[[ $found -eq 1 ]]
