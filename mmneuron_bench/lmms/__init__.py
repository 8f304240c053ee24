"""The ``mmneuron`` lmms-eval model: any lmms-eval task with domain-specific neurons switched off.

Kept free of imports: lmms-eval loads :mod:`mmneuron_bench.lmms.manifest` through its
``lmms_eval.models`` entry point on every start, so this package must import fast.
"""
