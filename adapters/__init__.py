"""Built-in model adapters (import name ``mmneuron_bench.adapters``).

Each module is an ordinary plugin, registered through the ``mmneuron_bench`` entry-point
group exactly as a third-party adapter package would be.
"""
