"""Interventions: changes to a loaded model around each task or document."""
