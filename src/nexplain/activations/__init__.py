"""Activations: extracting a layer's activations (`activations`) and the forward hooks that read them (`hooks`).

No imports here: a rule importing any module below hashes this file too (nexplain.codeversion).
"""
# `read`: the tables read back without torch. (A comment, not the docstring: the docstring is in
# the code hash of every rule that reads activations.)
