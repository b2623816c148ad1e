"""Compositional explanations (NetDissect, CoEx, Clustered CoEx): the explain rule (`explain`),
the searches (`search`), formulas and masks (`formulas`, `masks`, `bitmaps`), metrics
(`metrics`, `scores`), the opened concept store (`store`) and label masking (`labelmask`).

No imports here: a rule importing any module below hashes this file too (nexplain.codeversion).
"""
