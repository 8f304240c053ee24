"""mmneuron-bench plugin adding the BLIP-2 (OPT) model family."""

from mmneuron_blip2.adapter import Blip2Adapter

__all__ = ["Blip2Adapter"]
