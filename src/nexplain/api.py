"""One call per method on in-memory arrays: the functions the rules call, without files.

    import nexplain as nx
    store = nx.concept_store(masks)                # bool (C, N, H, W) concept masks
    table = nx.coex(maps, store, names)            # maps (N, U, h, w): one row per unit
    le = nx.linear(P, Q, splits, names)            # P (N, C) concepts, Q (N, U) activations
    scores = nx.simulate(le, P, names, Q, splits)  # correlation of each explanation on test

Shapes are checked first, with errors that say which argument and which axis is off.
Every call returns a pandas DataFrame with the columns of the rule's Parquet table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from nexplain.compositional.masks import ConceptStore
from nexplain.errors import DataError
from nexplain.linear.linear import ConceptFilter

__all__ = ["concept_store", "netdissect", "coex", "clustered", "linear", "simulate", "pure", "ConceptFilter"]


def concept_store(masks, image_level=None) -> ConceptStore:
    """Concept masks for the formula methods: bool `masks` (C, N, H, W), concept c on image n;
    `image_level` (C, N) bool marks image-level labels (a scene), which cover the whole image."""
    masks = np.asarray(masks)
    if masks.ndim != 4:
        raise DataError(f"masks: need (concepts, images, height, width), got shape {masks.shape}")
    return ConceptStore.from_dense(masks, image_level)


def _store(concepts) -> ConceptStore:
    return concepts if isinstance(concepts, ConceptStore) else concept_store(concepts)


def _names(names, n: int, what: str) -> list[str]:
    if names is None:
        return [f"c{i}" for i in range(n)]
    names = [str(x) for x in names]
    if len(names) != n:
        raise DataError(f"names: {len(names)} names for the {n} {what}")
    return names


def _formulas(method: str, maps, concepts, names, units, **settings) -> pd.DataFrame:
    from nexplain.compositional.explain import SCHEMA, Settings, explain_maps
    from nexplain.compositional.search import default_cache
    from nexplain.units import select_units

    store = _store(concepts)
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 4 or len(maps) != store.n_images:
        raise DataError(f"maps: need (images, units, h, w) with {store.n_images} images, the masks' "
                        f"count, got shape {maps.shape}")
    names = _names(names, store.n_concepts, "concepts of the masks")
    s = Settings(method=method, **settings)
    cache = default_cache(store)
    ids = np.arange(store.n_images)
    rows = []
    for u in select_units(units, maps.shape[1]):
        rows += explain_maps(int(u), ids, np.ascontiguousarray(maps[:, u]), store, names, s, cache)
    return pa.Table.from_pylist(rows, schema=SCHEMA).to_pandas()


def netdissect(maps, concepts, names=None, *, quantile: float = 0.995, units="all") -> pd.DataFrame:
    """NetDissect: the single concept of best IoU with each unit's top-quantile cells.
    `maps` (N, U, h, w) activations, upsampled to the masks' (H, W); `concepts` a
    `concept_store` or bool masks (C, N, H, W); `names` the C concept names."""
    return _formulas("netdissect", maps, concepts, names, units, quantile=quantile)


def coex(maps, concepts, names=None, *, length: int = 3, beam: int = 5, penalty: float | None = None,
         search: str = "mmesh", quantile: float = 0.995, units="all") -> pd.DataFrame:
    """Compositional Explanations: the formula (AND, OR, AND NOT; up to `length` concepts) of
    best IoU with each unit's top-quantile cells, by beam search (MMESH bounds by default)."""
    return _formulas("coex", maps, concepts, names, units, length=length, beam=beam, penalty=penalty,
                     search=search, quantile=quantile)


def clustered(maps, concepts, names=None, *, k: int = 5, ranges: str = "tile", length: int = 3,
              beam: int = 5, start_beam: int | None = 10, penalty: float | None = None,
              search: str = "mmesh", seed: int = 0, units="all") -> pd.DataFrame:
    """Clustered CoEx: each unit's activation range cut into `k` clusters, one formula per
    range (one row per unit and range; a dead unit has one row, status "dead")."""
    return _formulas("clustered", maps, concepts, names, units, k=k, ranges=ranges, length=length,
                     beam=beam, start_beam=start_beam, penalty=penalty, search=search, seed=seed)


def _splits(splits, n: int) -> dict[str, np.ndarray]:
    """{train, val, test} boolean masks of length n, from a dict of masks or a split-name array."""
    if isinstance(splits, dict):
        missing = [k for k in ("train", "val") if k not in splits]
        if missing:
            raise DataError(f"splits: missing {', '.join(missing)}; need boolean masks for train and val "
                            f"(and test to score), or one array of split names")
        out = {k: np.asarray(v, bool) for k, v in splits.items()}
    else:
        names = np.asarray(splits).astype(str)
        out = {k: names == k for k in ("train", "val", "test")}
    for k, m in out.items():
        if m.shape != (n,):
            raise DataError(f"splits[{k!r}]: need {n} booleans, one per image, got shape {m.shape}")
    if not out["train"].any() or not out["val"].any():
        raise DataError("splits: train and val each need at least one image")
    return out


def _pq(P, Q) -> tuple[np.ndarray, np.ndarray]:
    P, Q = np.asarray(P), np.asarray(Q, np.float64)
    if P.ndim != 2 or Q.ndim != 2 or len(P) != len(Q):
        raise DataError(f"P (images, concepts) and Q (images, units) need the same images, got "
                        f"shapes {P.shape} and {Q.shape}")
    return P, Q


def linear(P, Q, splits, names=None, *, lam: float = 0.05, alpha: float = 0.99, v: int = 10,
           r: int = 10, tol: float = 0.02, concept_filter: ConceptFilter | dict = ConceptFilter(),
           progress: bool = False) -> pd.DataFrame:
    """Linear Explanations: per unit, a sparse non-negative weighted sum of concepts that tracks
    its activation over the whole range. `P` (N, C) concept scores in [0, 1], `Q` (N, U)
    activations, `splits` {train, val[, test]} boolean masks or an (N,) array of split names.
    A result with no concept passing `concept_filter` is a DataError naming the largest value."""
    from nexplain.linear.linear import LinearSettings, explain_units, linear_table

    P, Q = _pq(P, Q)
    masks = _splits(splits, len(P))
    s = LinearSettings(lam=lam, alpha=alpha, v=v, r=r, tol=tol, concept_filter=concept_filter)
    exps, keep, W = explain_units(P, Q, masks, s, progress=progress, matrix="P", activations="Q")
    return linear_table(exps, _names(names, P.shape[1], "columns of P"), keep, W)


def simulate(explanations: pd.DataFrame, P, names, Q, splits, *, method: str | None = None) -> pd.DataFrame:
    """Correlation scores: each explanation simulated on the simulator's concepts `P` (N, C),
    named `names`, against the unit's activation in `Q` (N, U), on test (and val).
    `explanations`: a table from `linear`, `netdissect`, `coex` or `clustered`; `method` names it
    in the output (default: "le" for a linear table, else "formula"). Ablation scores need the
    model: the `simulate` rule computes them."""
    from nexplain.linear.scoring import explanation_rows, score_rows
    from nexplain.linear.simulate import Simulator

    P, Q = _pq(P, Q)
    masks = _splits(splits, len(P))
    if "test" not in masks:
        raise DataError("splits: simulation scores on test; give a test mask")
    name = method or ("le" if "weights" in explanations.columns else "formula")
    rows = explanation_rows(name, explanations)
    sim = Simulator(P, _names(names, P.shape[1], "columns of P"))
    return score_rows(rows.reset_index(drop=True), sim, Q, masks, ablation=None)


def pure(relevance: dict[str, np.ndarray], reference, *, ceiling=None, own=None, k: int = 2,
         seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """PURE circuits and the per-layer distance correlation. `relevance[layer]` (U, M, C_layer):
    each unit's relevances on its top-M images; `reference` (U, M, D): an embedding of those
    images; `ceiling` a second embedding (U, M, D'), `own` the unit's layer's activation vectors
    (U, M, D''), both optional. Returns (circuits, correlations, summary) as the rule writes them."""
    from nexplain.pure.pure import evaluate, summary

    if not relevance:
        raise DataError("relevance: give at least one earlier layer's (units, images, channels) array")
    rel = {layer: np.asarray(R, np.float64) for layer, R in relevance.items()}
    first = next(iter(rel.values()))
    if first.ndim != 3:
        raise DataError(f"relevance: need (units, images, channels) arrays, got shape {first.shape}")
    U, M = first.shape[:2]
    for layer, R in rel.items():
        if R.ndim != 3 or R.shape[:2] != (U, M):
            raise DataError(f"relevance[{layer!r}]: need ({U}, {M}, channels), got shape {R.shape}")
    flat = {}
    for name, x in (("reference", reference), ("ceiling", ceiling), ("own", own)):
        if x is None:
            continue
        x = np.asarray(x, np.float64)
        if x.ndim != 3 or x.shape[:2] != (U, M):
            raise DataError(f"{name}: need ({U}, {M}, dims), one vector per unit and top image, "
                            f"got shape {x.shape}")
        flat[name] = x.reshape(U * M, -1)
    # every (unit, image) pair gets its own row id, so the embeddings index by it
    top = np.arange(U * M).reshape(U, M)
    rows = {(u, int(i)): int(i) for u in range(U) for i in top[u]}
    relevance_rows = {layer: R.reshape(U * M, -1) for layer, R in rel.items()}
    own_rows = flat.get("own", np.full((U * M, 1), np.nan))
    circuits, scores = evaluate(np.arange(U), top, relevance_rows, rows, flat["reference"],
                                flat.get("ceiling"), own_rows, k, seed, progress=False)
    circuits = circuits.rename(columns={"image_id": "pair"})
    circuits["image"] = circuits["pair"] % M  # position among the unit's top images
    return circuits.drop(columns="pair"), scores, summary(scores)
