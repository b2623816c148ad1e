"""Linear Explanations (`linear`), their concept matrices (`conceptmatrix`), simulation scoring
(`simulate`, `scoring`), ablation with the model's tail (`ablation`, `tail`) and Top Impact (`impact`).

No sibling imports here: a rule importing any module below hashes this file too (nexplain.codeversion).
"""

from nexplain.method_module import make_callable

# Importing any submodule binds `nexplain.linear` to this package, so the package itself must be
# the API call nx.linear(...); method_module imports nothing of nexplain, so hashes stay local.
make_callable(__name__)
