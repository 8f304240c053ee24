"""Two processes started by accelerate's launcher, run by this very interpreter (not whatever
``accelerate`` is on PATH), as the tests start them on a machine without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys

# `--cpu` starts a single process (several CPU processes need mpirun); `--multi_gpu` starts
# them through torchrun, and with no CUDA device visible they talk over gloo.
LAUNCH = [
    sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
]  # fmt: skip


def launch_two(*args: str) -> subprocess.CompletedProcess:
    """Run ``args`` (``-m MODULE ...`` or ``SCRIPT ...``) in two processes; fail with their
    output unless both succeed."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    done = subprocess.run(
        [*LAUNCH, *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done
