"""Run mmneuron-bench commands one after the other in this process.

``tests/test_data_parallel.py`` starts it under ``accelerate launch`` with the JSON file of
argument lists as its argument: one launch runs every command, so the test pays the start-up
of the processes once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mmneuron_bench.cli import build_cli


def main() -> None:
    cli = build_cli()
    for args in json.loads(Path(sys.argv[1]).read_text()):
        cli.main(args, prog_name="mmneuron-bench", standalone_mode=False)


if __name__ == "__main__":
    main()
