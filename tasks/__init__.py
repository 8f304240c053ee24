"""lmms-eval task folders shipped with mmneuron-bench (import name ``mmneuron_bench.tasks``).

Each subfolder is one domain's task(s): a YAML file and its ``utils.py``. The folder is
passed to lmms-eval as an include path; it is data, not Python modules to import.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
