#!/usr/bin/env bash
# The test suite against the newest versions pyproject.toml allows, in a fresh virtual
# environment: drift in a dependency shows up here as a failing run, before a user meets it.
# Not part of CI (CI installs the lock); run it before refreshing the lock (scripts/lock.sh).
#   bash scripts/test_latest.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
env=$(mktemp -d)
trap 'rm -rf "$env"' EXIT
"$python" -m venv "$env/venv"
PYTHON="$env/venv/bin/python" bash install.sh --dev --latest
"$env/venv/bin/python" -m pip freeze --exclude-editable >"$env/freeze.txt"
echo "newest allowed versions: $(wc -l <"$env/freeze.txt") packages; differences from the lock:"
diff <(grep -E '^[^ #].*==' requirements-dev.lock | sed 's/ .*//' | tr 'A-Z_' 'a-z-' | sort) \
  <(tr 'A-Z_' 'a-z-' <"$env/freeze.txt" | sort) || true
"$env/venv/bin/python" -m pytest -q \
  --deselect tests/test_lock.py::test_environment_matches_the_lock "$@"
