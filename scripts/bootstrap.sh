#!/usr/bin/env bash
# Creates .venv on first use and installs the job with its pinned dependencies
# (requirements.lock as constraints). Re-installs when setup.py or the lock file change.
# Usage: scripts/bootstrap.sh [--with-buf]   (--with-buf also installs buf from the npm registry)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON_BIN="${PYTHON:-}"
if [[ -z "$PYTHON_BIN" ]]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON_BIN="$candidate"
      break
    fi
  done
fi
if [[ -z "$PYTHON_BIN" ]]; then
  echo "bootstrap: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

stamp_value="$(cat setup.py requirements.lock | sha256sum | cut -d' ' -f1)"
stamp_file=".venv/.riskpipe-installed"
if [[ ! -x .venv/bin/python ]]; then
  echo "bootstrap: creating .venv with $PYTHON_BIN" >&2
  "$PYTHON_BIN" -m venv .venv
fi
if [[ ! -f "$stamp_file" || "$(cat "$stamp_file")" != "$stamp_value" ]]; then
  echo "bootstrap: installing dependencies into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install --quiet -c requirements.lock -e ".[dev]" >&2
  echo "$stamp_value" > "$stamp_file"
fi

if [[ "${1:-}" == "--with-buf" && ! -x node_modules/.bin/buf ]]; then
  if command -v npm >/dev/null 2>&1; then
    echo "bootstrap: installing buf (npm ci)" >&2
    npm ci --no-audit --no-fund --loglevel=error >&2 || echo "bootstrap: npm ci failed; contract lint and breaking checks will say so" >&2
  else
    echo "bootstrap: npm not found; contract lint and breaking checks will say so" >&2
  fi
fi
