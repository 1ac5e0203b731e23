#!/usr/bin/env bash
# Finds a program that a Debian package provides, and installs the package with apt-get where the
# program is missing (as root, or with sudo). Prints the program's path.
#   scripts/apt_tool.sh chromium chromium   # the run report's browser test (Playwright drives it)
#   scripts/apt_tool.sh dot graphviz        # --render_graph draws the job's graph with Graphviz
#   scripts/apt_tool.sh --install PACKAGE   # installs the package, prints nothing (scripts/postgres.sh)
set -euo pipefail
install() {
  local package="$1"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "no apt-get to install Debian's $package package: install it by other means" >&2
    return 1
  fi
  local sudo=""
  if [[ "$(id -u)" != 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "installing the $package package needs root (or sudo)" >&2
      return 1
    fi
    sudo="sudo"
  fi
  echo "installing Debian's $package package with apt-get (once)" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$package" >&2 ||
    { $sudo apt-get update -q >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$package" >&2; }
}
if [[ "${1:-}" == "--install" ]]; then
  install "$2"
  exit $?
fi
program="$1"
package="$2"
if found="$(command -v "$program" 2>/dev/null)"; then
  echo "$found"
  exit 0
fi
install "$package"
command -v "$program"
