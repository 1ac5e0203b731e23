#!/usr/bin/env bash
# Runs the scoring job on the bundled sample data and prints the summary.
#   ./run_local.sh                 batch: data/sample on the FnApiRunner (the DirectRunner's local engine)
#   ./run_local.sh --streaming     streaming: a watched folder on Prism, fed by tools.stream_files
# Extra arguments go to the job, e.g. ./run_local.sh --output_dir /tmp/out --parquet true
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/bootstrap.sh
if [[ "${1:-}" != "--streaming" ]]; then
  exec .venv/bin/python -m pipeline.runner --config config.yaml "$@"
fi
shift
scripts/prism.sh >/dev/null   # Beam's Prism runner, built once from the Go module proxy and cached
incoming=output/incoming
rm -rf "$incoming" && mkdir -p "$incoming"
# Each demo is a new job: the same sample again, in files of the same names, would otherwise be a
# restart of the last demo (files done, ids and card histories remembered; see docs/streaming.md).
rm -rf output/streaming
echo "streaming: dropping data/sample into $incoming at 1,000 records/s (1% redelivered); the job stops 10 s after the last file" >&2
echo "streaming: event times are moved to the moment each file is dropped, so each card's month comes within ten seconds: velocity features and scores drift from the model's training data, and the summary says so" >&2
.venv/bin/python -m tools.stream_files --data data/sample --out "$incoming" --rate 1000 &
feeder=$!
trap 'kill "$feeder" 2>/dev/null || true' EXIT
status=0
.venv/bin/python -m pipeline.runner --config config.yaml --source watch --watch_dir "$incoming" \
  --output_dir output/streaming --stop_after_idle_seconds 10 "$@" || status=$?
wait "$feeder" 2>/dev/null || true
exit "$status"
