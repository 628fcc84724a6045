#!/usr/bin/env bash
# Install everything the test suite needs into .venv and run it (the README's test command; .ci/run calls it).
# Extra arguments go to pytest, e.g. `tools/test.sh -k journal -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"

echo "== ruff"
.venv/bin/ruff format --check castate tests tools
.venv/bin/ruff check castate tests tools

echo "== pytest"
.venv/bin/python -m pytest "$@"
