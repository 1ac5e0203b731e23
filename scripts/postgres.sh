#!/usr/bin/env bash
# Finds PostgreSQL's server binaries (initdb, postgres) for the tests and the benchmarks, and
# installs Debian's postgresql package with apt-get where they are missing (as root, or with
# sudo). Prints the folder holding them. The package's own cluster is not used: the tests and
# benchmarks start their own servers on 127.0.0.1 (tools/postgres_server.py).
set -euo pipefail
find_bin() {
  if [[ -n "${RISKPIPE_PG_BIN:-}" && -x "$RISKPIPE_PG_BIN/initdb" ]]; then
    echo "$RISKPIPE_PG_BIN"
    return 0
  fi
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
    if [[ -x "$dir/initdb" && -x "$dir/postgres" ]]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}
if find_bin; then
  exit 0
fi
# Do not start or create the package's own cluster: only its binaries are used.
"$(dirname "${BASH_SOURCE[0]}")/apt_tool.sh" --install postgresql ||
  { echo "postgres: no PostgreSQL server binaries: install PostgreSQL 15+ and set RISKPIPE_PG_BIN" >&2; exit 1; }
find_bin
