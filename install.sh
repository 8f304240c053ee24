#!/usr/bin/env bash
# Install mmneuron-bench (editable) into the current Python environment.
#   bash install.sh            the tool, with exactly the versions of requirements.lock
#   bash install.sh --dev      the tool plus the test and lint tools (requirements-dev.lock)
#   bash install.sh --latest   the newest versions pyproject.toml allows instead of the lock
# A torch that is already installed (a CUDA build, say) is kept; otherwise the lock's CPU build.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
lock=requirements.lock extras="" latest=0
for arg in "$@"; do
  case $arg in
    --dev) lock=requirements-dev.lock extras="[dev]" ;;
    --latest) latest=1 ;;
    *) echo "install.sh: unknown option $arg (options: --dev, --latest)" >&2; exit 2 ;;
  esac
done
if [ $latest = 0 ] && ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "install.sh: the lock is for Python 3.11; installing the newest versions pyproject.toml" \
    "allows instead (as with --latest)" >&2
  latest=1
fi
pip=("$python" -m pip install --quiet)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
locked_torch=$(sed -n 's/^torch==\([^+]*\).*/\1/p' "$lock")
have_torch=0
# stderr hidden: a torch without numpy warns on import.
if "$python" -c "import torch" >/dev/null 2>&1; then
  have_torch=1
  "$python" -c "import torch; print('torch==' + torch.__version__)" 2>/dev/null >"$tmp/torch.txt"
else
  echo "torch==$locked_torch" >"$tmp/torch.txt"
fi

if [ $latest = 1 ]; then
  # The torch pinned in place, so that no dependency (lmms-eval wants torchvision) swaps it.
  "${pip[@]}" --upgrade --upgrade-strategy eager -c "$tmp/torch.txt" -e ".${extras}"
  # lmms-eval requires torchvision (and timm, which imports it), but the PyPI torchvision wheel
  # does not load beside the CPU torch build; transformers then fails on import, and so does
  # the `accelerate` CLI through timm. A package of these two that does not import is removed.
  for package in torchvision timm; do
    if "$python" -m pip show "$package" >/dev/null 2>&1 \
      && ! "$python" -c "import $package" >/dev/null 2>&1; then
      "$python" -m pip uninstall --quiet -y "$package"
    fi
  done
else
  grep -v '^torch==' "$lock" >"$tmp/lock.txt"
  if [ $have_torch = 0 ]; then
    # Plain `torch==X` picks the CPU build where one is offered; its dependencies from the lock.
    "${pip[@]}" -c "$tmp/lock.txt" "torch==$locked_torch"
  fi
  # Exactly the lock, nothing resolved anew (it holds every dependency), then the project.
  "${pip[@]}" --no-deps -r "$tmp/lock.txt"
  "${pip[@]}" --no-deps -e .
fi
"$python" -c "import mmneuron_bench, transformers, lmms_eval" && echo "mmneuron-bench installed"
