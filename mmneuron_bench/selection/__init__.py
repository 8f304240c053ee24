"""Selecting neurons from statistics (DAPE) and drawing random controls."""
