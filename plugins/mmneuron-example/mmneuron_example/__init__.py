"""An example mmneuron-bench plugin: the BLIP-2 (OPT) adapter and the ``scale`` intervention."""

from mmneuron_example.adapter import Blip2Adapter
from mmneuron_example.scaling import SCALE, Scaling

__all__ = ["SCALE", "Blip2Adapter", "Scaling"]
