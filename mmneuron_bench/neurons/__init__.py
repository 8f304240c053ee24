"""Multimodal neurons (Pan et al.): contribution scores, ablation, knowledge editing."""
