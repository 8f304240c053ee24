"""Built-in subcommands of ``mmneuron-bench``, one module each."""
