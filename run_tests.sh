#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy), architecture (import-linter + stage names), contract
# drift, the generated references (Flex Template parameters, docs/configuration.md) against the config
# sections, and pytest. Sets up .venv (and buf) on
# first use. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/bootstrap.sh --with-buf
# PostgreSQL's server binaries, for the profile-store tests (installed with apt-get where missing).
scripts/postgres.sh >/dev/null || echo "run_tests: PostgreSQL is not available; the profile-store tests will say so" >&2
# Chromium for the run report's browser test, Graphviz for the graph picture (Debian packages).
scripts/apt_tool.sh chromium chromium >/dev/null || echo "run_tests: Chromium is not available; the report's browser test will say so" >&2
scripts/apt_tool.sh dot graphviz >/dev/null || echo "run_tests: Graphviz is not available; the graph picture's tests will say so" >&2
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check .
ruff format --check .
echo "== types (mypy)"
mypy pipeline tools bench contracts/__init__.py
echo "== architecture"
lint-imports
python -m tools.check_stages
echo "== contracts"
python -m tools.contracts check
echo "== generated references (Flex Template parameters, docs/configuration.md, the graph's picture)"
python -m tools.template_metadata --check
python -m tools.config_docs --check
python -m tools.graph_picture --check
echo "== pytest"
python -m pytest "$@"
