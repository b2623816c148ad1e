"""Ground truth: a model with planted units, and every method graded against them.

Modules: planted (the specs and their functions), plant (the training loss), explain (every method
on the planted units), predict (an explanation's predicted concept activation), neuroneval (the
metrics), grade (the grades), study (the rules' calls), report (table and figure).
"""
