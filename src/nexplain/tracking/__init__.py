"""Run bookkeeping: MLflow runs (`tracking`, `parent_run`), content records of outputs
(`records`), lineage of an artifact (`lineage`) and what a killed run left (`resume`).

No imports here: a rule importing any module below hashes this file too (nexplain.codeversion).
"""
