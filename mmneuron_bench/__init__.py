"""mmneuron-bench: domain-specific neurons of multimodal LLMs (MMNeuron) on any lmms-eval task."""

__version__ = "0.1.0"
