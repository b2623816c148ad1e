"""Activations: extracting a layer's activations (`activations`) and the forward hooks that read them (`hooks`).

No imports here: a rule importing any module below hashes this file too (nexplain.codeversion).
"""
