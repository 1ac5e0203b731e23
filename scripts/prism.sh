#!/usr/bin/env bash
# Builds Beam's Prism runner (the local streaming runner, a Go program) from the Go module proxy
# and caches it; prints the binary's path. A second call finds the cached binary at once.
#   scripts/prism.sh            # build if missing, print the path
# Cache: ${RISKPIPE_CACHE:-~/.cache/riskpipe}/prism/<version>/bin/prism (its Go module and build
# caches sit beside it, so that a rebuild after a version bump is quicker). The version is Beam's:
# the Python SDK and Prism must match.
set -euo pipefail
VERSION="${PRISM_VERSION:-v2.77.0}"
CACHE="${RISKPIPE_CACHE:-$HOME/.cache/riskpipe}/prism"
BIN="$CACHE/$VERSION/bin/prism"
if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "prism: Go is required to build Beam's Prism runner (https://go.dev/dl/, or apt-get install golang)" >&2
  exit 1
fi
mkdir -p "$CACHE/$VERSION"
echo "prism: building Beam's Prism runner $VERSION with go install (takes about two minutes, once)" >&2
tmp="$(mktemp -d "$CACHE/$VERSION/.build-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# RISKPIPE_GOMODCACHE / RISKPIPE_GOCACHE: Go download and build caches to reuse (the empty-cache
# check shares them; the install itself still runs).
GOPATH="$CACHE/gopath" GOMODCACHE="${RISKPIPE_GOMODCACHE:-$CACHE/gopath/pkg/mod}" GOCACHE="${RISKPIPE_GOCACHE:-$CACHE/gocache}" \
  GOBIN="$tmp" GOFLAGS=-modcacherw \
  go install "github.com/apache/beam/sdks/v2/go/cmd/prism@$VERSION" >&2
mkdir -p "$(dirname "$BIN")"
mv "$tmp/prism" "$BIN"
echo "$BIN"
