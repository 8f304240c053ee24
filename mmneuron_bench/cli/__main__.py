"""``python -m mmneuron_bench.cli``: the command line."""

from mmneuron_bench.cli import main

main()
