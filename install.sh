#!/usr/bin/env bash
# Install mmneuron-bench (editable) into the current Python environment.
#   bash install.sh         the tool
#   bash install.sh --dev   the tool plus the test and lint tools
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
extras=""
if [ "${1:-}" = "--dev" ]; then extras="[dev]"; fi

# Keep an existing torch (a CUDA build, say); otherwise take the CPU build.
if ! "$python" -c "import torch" >/dev/null 2>&1; then
  "$python" -m pip install --quiet "torch==2.13.0"
fi
# Pin the torch in place so that no dependency (lmms-eval wants torchvision) swaps it.
pin=$(mktemp)
trap 'rm -f "$pin"' EXIT
"$python" -c "import torch; print('torch==' + torch.__version__)" >"$pin"
"$python" -m pip install --quiet -c "$pin" -e ".${extras}"
# lmms-eval requires torchvision (and timm, which imports it), but the PyPI torchvision wheel
# does not load beside the CPU torch build; transformers then fails on import, and so does the
# `accelerate` CLI through timm. A package of these two that does not import is removed; one
# that imports is kept.
for package in torchvision timm; do
  if "$python" -m pip show "$package" >/dev/null 2>&1 && ! "$python" -c "import $package" >/dev/null 2>&1; then
    "$python" -m pip uninstall --quiet -y "$package"
  fi
done
"$python" -c "import mmneuron_bench, transformers, lmms_eval" && echo "mmneuron-bench installed"
