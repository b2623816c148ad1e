"""PURE circuits: the relevances (`relevance`), the circuits and their evaluation (`pure`) and
their figures (`pure_figures`).

No sibling imports here: a rule importing any module below hashes this file too (nexplain.codeversion).
"""

# Also here: `heatmaps`, each circuit's pixels (a comment: the docstring is in the rules' code hash).

from nexplain.method_module import make_callable

# Importing any submodule binds `nexplain.pure` to this package, so the package itself must be
# the API call nx.pure(...); method_module imports nothing of nexplain, so hashes stay local.
make_callable(__name__)
