#!/usr/bin/env bash
# Install everything the test suite needs into .venv and run it (the README's test command; .ci/run calls it).
# Extra arguments go to pytest, e.g. `tools/test.sh -k journal -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The backend tests start throwaway PostgreSQL and Redis servers (tools/servers.py), and the
# castate ui tests drive Debian's chromium (Playwright downloads no browser): install the Debian
# packages when their binaries are missing (CI runs as root on a fresh Debian machine).
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/bin/chromium ] || need+=(chromium)
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  need+=(postgresql)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tools/test.sh: the tests need ${need[*]}; install with: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
  echo "== apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Another apt or dpkg run (unattended-upgrades on a fresh machine) may hold the lock: wait
  # for it, up to APT_LOCK_WAIT seconds, instead of failing at once.
  wait_s=${APT_LOCK_WAIT:-600}
  if command -v fuser >/dev/null 2>&1 && fuser /var/lib/dpkg/lock-frontend /var/lib/apt/lists/lock >/dev/null 2>&1; then
    echo "tools/test.sh: another apt/dpkg run holds the lock; waiting up to ${wait_s}s for it" >&2
  fi
  lock=(-o "DPkg::Lock::Timeout=${wait_s}")
  apt-get "${lock[@]}" update -qq >/dev/null || {
    echo "tools/test.sh: apt-get update failed (the apt lock was held for over ${wait_s}s?)" >&2
    exit 1
  }
  apt-get "${lock[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null || {
    echo "tools/test.sh: apt-get install ${need[*]} failed (the dpkg lock was held for over ${wait_s}s?)" >&2
    exit 1
  }
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"

# marsys 0.2.1, for the tests that run MARSYS's own code over castate. Its wheel declares
# Python >= 3.12 but runs on 3.11 (those tests check it), so install it on whatever Python made
# .venv; only the dependencies its import needs (see tools/marsys-test-requirements.txt).
# Installed after its dependencies, so a present marsys 0.2.1 means both are done.
if ! .venv/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("marsys") != "0.2.1")' 2>/dev/null; then
  .venv/bin/python -m pip install --quiet -r tools/marsys-test-requirements.txt
  .venv/bin/python -m pip install --quiet --no-deps --ignore-requires-python "marsys==0.2.1"
fi
export CASTATE_REQUIRE_MARSYS=1  # a missing marsys fails those tests instead of skipping them

echo "== ruff"
.venv/bin/ruff format --check castate tests tools examples
.venv/bin/ruff check castate tests tools examples

echo "== mypy"
.venv/bin/python -m mypy -p castate

echo "== pytest"
.venv/bin/python -m pytest "$@"
