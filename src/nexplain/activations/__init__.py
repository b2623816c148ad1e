"""Activations: extracting a layer's activations (`activations`), reading the tables back without
torch (`read`) and the forward hooks that read a layer (`hooks`).

No imports here: a rule importing any module below hashes this file too (nexplain.codeversion).
"""
