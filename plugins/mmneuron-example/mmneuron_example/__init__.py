"""An example mmneuron-bench plugin: the VipLlava adapter and the ``scale`` intervention."""

from mmneuron_example.scaling import SCALE, Scaling
from mmneuron_example.vipllava import VipLlavaAdapter

__all__ = ["SCALE", "Scaling", "VipLlavaAdapter"]
