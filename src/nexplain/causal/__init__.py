"""Counterfactuals rendered by the world: causal efficacy of explanations, copy-paste flips."""
