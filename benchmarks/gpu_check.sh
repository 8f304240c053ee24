#!/usr/bin/env bash
# The GPU check in one command, on a machine with one CUDA GPU, offline (nothing downloaded):
#   bash benchmarks/gpu_check.sh [--json figures.json]
# 1. benchmarks/gpu_check.py: bench ratios, peak memory and recording throughput of a
#    random-weight LLaVA-NeXT of the 7B dimensions in bfloat16 (see its docstring);
# 2. the tests marked gpu (counts on the GPU equal those on the CPU, an empty mask leaves the
#    outputs bit-identical, --device auto with CPU offload), which skip without CUDA.
# A dry run of the same steps on the CPU at toy size: bash benchmarks/gpu_check.sh --device cpu --small
# PYTHON selects the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
"$PYTHON" benchmarks/gpu_check.py "$@"
"$PYTHON" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
