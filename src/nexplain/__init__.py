"""nexplain: explain what the units of vision models do across their whole activation range.

The Python API (`import nexplain as nx`): one call per method on in-memory arrays, the same
code the workflow's rules run. See `nexplain.api` for shapes:

    nx.concept_store(masks)                  nx.linear(P, Q, splits, names)
    nx.netdissect(maps, store, names)        nx.simulate(table, P, names, Q, splits)
    nx.coex(maps, store, names)              nx.pure(relevance, reference)
    nx.clustered(maps, store, names)
"""

__version__ = "0.1.0"

_API = ("concept_store", "netdissect", "coex", "clustered", "linear", "simulate", "pure", "ConceptFilter")
__all__ = list(_API)


_MODULES = ("linear", "pure")  # method packages that are their own API call (nexplain.method_module)


def __getattr__(name):
    # Loaded on first use and by name: `import nexplain.io` in a job neither imports every
    # method nor takes them into its code hash (nexplain.codeversion follows import statements).
    import importlib

    if name in _MODULES:
        return importlib.import_module(f"nexplain.{name}")
    if name in _API:
        return getattr(importlib.import_module("nexplain.api"), name)
    raise AttributeError(f"module 'nexplain' has no attribute {name!r}")
