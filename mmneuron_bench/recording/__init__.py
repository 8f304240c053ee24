"""Recording: counting, per neuron and domain, the tokens on which it is active."""
