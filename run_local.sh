#!/usr/bin/env bash
# Runs the scoring job on the bundled sample data on the FnApiRunner (the DirectRunner's local engine) and prints the summary.
# Extra arguments go to the job, e.g. ./run_local.sh --output_dir /tmp/out --parquet true
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/bootstrap.sh
exec .venv/bin/python -m pipeline.runner --config config.yaml "$@"
