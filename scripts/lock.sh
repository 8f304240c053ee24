#!/usr/bin/env bash
# Refresh the locks that install.sh installs: requirements.lock (the tool) and
# requirements-dev.lock (the tool plus the test and lint tools), both resolved by pip-tools'
# pip-compile from pyproject.toml for CPython 3.11 on Linux x86-64 with the CPU torch.
#   bash scripts/lock.sh            keep every pin that still satisfies pyproject.toml
#   bash scripts/lock.sh --upgrade  take the newest versions pyproject.toml allows
# Then run the tests on the new lock (bash install.sh --dev && python3 -m pytest) and commit both.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
TORCH_VERSION=2.13.0   # the CPU build install.sh puts in a fresh environment
PIP_TOOLS_VERSION=7.6.2
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "lock.sh: the locks are for Python 3.11; run it with PYTHON=python3.11" >&2
  exit 2
fi
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$python" -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install --quiet "pip-tools==$PIP_TOOLS_VERSION"
echo "torch==$TORCH_VERSION" >"$tools/torch.txt"
# torchvision and timm (required by lmms-eval, used by no code path of ours) are left out: the
# PyPI torchvision wheel does not load beside the CPU torch build and breaks transformers' import.
compile=("$tools/venv/bin/pip-compile" --quiet --strip-extras --no-emit-find-links
  --no-emit-index-url --unsafe-package torchvision --unsafe-package timm "$@")
export CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh"
"${compile[@]}" -c "$tools/torch.txt" -o requirements.lock pyproject.toml
"${compile[@]}" -c requirements.lock --extra dev -o requirements-dev.lock pyproject.toml
# The torch pin's temporary file would make every refresh differ: name the pin instead.
sed -i "s|-c $tools/torch.txt|-c torch==$TORCH_VERSION (scripts/lock.sh)|" requirements*.lock
echo "wrote requirements.lock ($(grep -c '^[^ #].*==' requirements.lock) packages) and" \
  "requirements-dev.lock ($(grep -c '^[^ #].*==' requirements-dev.lock) packages)"
