"""Five synthetic image domains mirroring the MMNeuron paper's: common, medical, driving,
remote sensing and documents. Samples (32 px image, question, one-word answer) are drawn
deterministically from (domain, split, index) and cached on first use; ``tasks/synthetic``
serves them to lmms-eval as ``mmneuron_synth_<domain>_<split>``.
"""

from mmneuron_bench.synthetic.cache import cache_root, load_split
from mmneuron_bench.synthetic.generate import (
    DOMAINS,
    SPLIT_SIZES,
    VERSION,
    SyntheticSample,
    chance_level,
    generate,
    questions,
)

__all__ = [
    "DOMAINS",
    "SPLIT_SIZES",
    "VERSION",
    "SyntheticSample",
    "cache_root",
    "chance_level",
    "generate",
    "load_split",
    "questions",
]
