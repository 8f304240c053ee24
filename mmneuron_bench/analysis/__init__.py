"""Analyses of domain-specific neurons: where they sit, how far switching them off moves the
language model's hidden states, and what the logit lens sees layer by layer."""
