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
if ! command -v apt-get >/dev/null 2>&1; then
  echo "postgres: no PostgreSQL server binaries and no apt-get: install PostgreSQL 15+ and set RISKPIPE_PG_BIN" >&2
  exit 1
fi
sudo=""
if [[ "$(id -u)" != 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "postgres: installing the postgresql package needs root (or sudo)" >&2
    exit 1
  fi
  sudo="sudo"
fi
echo "postgres: installing Debian's postgresql package with apt-get (once)" >&2
# Do not start or create the package's own cluster: only its binaries are used.
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >&2 ||
  { $sudo apt-get update -q >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >&2; }
find_bin
