"""PURE circuits: the relevances (`relevance`), the circuits, their concepts and their evaluation
(`pure`), their pixel heatmaps (`heatmaps`) and their figures (`pure_figures`).

No sibling imports here: a rule importing any module below hashes this file too (nexplain.codeversion).
"""

from nexplain.method_module import make_callable

# Importing any submodule binds `nexplain.pure` to this package, so the package itself must be
# the API call nx.pure(...); method_module imports nothing of nexplain, so hashes stay local.
make_callable(__name__)
