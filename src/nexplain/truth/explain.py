"""Every method on the planted units of one variant of the network: the explanations the grades read.

Variants (`VARIANTS`): the planted model; the same architecture with random weights; and the
planted model's maps permuted across images, which is explaining them with shuffled concept
labels (a formula found on image perm[i]'s activations is graded on image i). The formula
methods run `explain_maps`, LE runs `linear.explain_units` and PURE its relevances, K-means
circuits and circuit concepts: the code of the pipeline's own rules, on the planted units only.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from nexplain.activations.hooks import TraceDict
from nexplain.compositional.explain import METHODS, Settings, explain_maps
from nexplain.compositional.search import default_cache

VARIANTS = ("planted", "random", "shuffled")


def unit_maps(module: torch.nn.Module, images: torch.Tensor, normalize, layers: dict[str, list[int] | None],
              batch_size: int = 64) -> dict[str, np.ndarray]:
    """{layer: float32 (N, U, h, w)} maps of the listed channels (None: every channel), for uint8
    images (N, 3, H, W)."""
    module.eval()
    out = {layer: [] for layer in layers}
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            with TraceDict(module, list(layers), stop=True) as td:
                module(normalize(images[s:s + batch_size].float()))
            for layer, units in layers.items():
                maps = td[layer].output if units is None else td[layer].output[:, units]
                out[layer].append(maps.float().contiguous().numpy())
    return {layer: np.concatenate(v) for layer, v in out.items()}


def formula_tables(maps: dict[str, np.ndarray], layers: dict[str, list[int]], store, names,
                   settings: dict[str, dict], methods=METHODS) -> tuple[dict[str, pd.DataFrame], list[dict]]:
    """({method: rule-schema rows with a layer column}, per-unit seconds) for NetDissect, CoEx, Clustered
    (or `methods`), searched over every image of the store, as the rules search (the methods have no
    held-out split). `maps[layer][:, j]` is unit `layers[layer][j]`."""
    cache = default_cache(store)
    ids = np.arange(store.n_images)
    tables, seconds = {}, []
    for method in methods:
        s, rows = Settings(**settings[method]), []
        for layer, units in layers.items():
            for j, unit in enumerate(units):
                t0 = time.perf_counter()
                got = explain_maps(unit, ids, np.ascontiguousarray(maps[layer][ids, j]), store, names, s, cache)
                seconds.append({"method": method, "layer": layer, "unit": unit, "seconds": time.perf_counter() - t0})
                rows += [{**r, "layer": layer} for r in got]
        tables[method] = pd.DataFrame(rows)
    return tables, seconds


def linear_tables(pooled: dict[str, np.ndarray], layers: dict[str, list[int]], matrices: dict, splits,
                  settings: dict) -> tuple[dict[str, pd.DataFrame], list[dict]]:
    """({le_<source>: LE rows with a layer column}, seconds) from image-level activations (N, U) per layer.
    `matrices[source]` = (P (N, C) in image order, names)."""
    from nexplain.linear.linear import LinearSettings, explain_units, linear_table

    s = LinearSettings(**settings)
    tables, seconds = {}, []
    for source, (P, names) in matrices.items():
        parts = []
        for layer, units in layers.items():
            t0 = time.perf_counter()
            exps, keep, W = explain_units(P, pooled[layer].astype(np.float64), splits, s, progress=False)
            per = (time.perf_counter() - t0) / len(units)
            t = linear_table(exps, names, keep, W)
            t["unit"], t["layer"] = np.asarray(units, np.int32), layer
            parts.append(t)
            seconds += [{"method": f"le_{source}", "layer": layer, "unit": u, "seconds": per} for u in units]
        tables[f"le_{source}"] = pd.concat(parts, ignore_index=True)
    return tables, seconds


def pure_tables(module, load, peak: np.ndarray, fit: np.ndarray, units: list[int], layer: str, earlier: list[str],
                P, names, top: int, k: int, seed: int) -> tuple[pd.DataFrame, list[dict]]:
    """PURE on `units` of `layer`: one row per (unit, earlier layer, top image) with its circuit and
    that circuit's concept. `peak` (N, U) spatial maxima, top images among `fit` (bool per image);
    `load(ids)` the images as model input."""
    from nexplain.pure.pure import circuit_concepts, circuits
    from nexplain.pure.relevance import relevances, top_images

    t0 = time.perf_counter()
    tops = top_images(np.flatnonzero(fit), peak[fit], top)
    pairs = np.array([(u, i) for u, images in zip(units, tops) for i in images], np.int64)
    rel = relevances(module, load, pairs, layer, earlier, progress=False)
    rows = []
    for e in earlier:
        for u in units:
            sel = pairs[:, 0] == u
            labels = circuits(rel[e][sel], k, seed)
            rows += [{"unit": u, "layer": e, "image_id": int(i), "cluster": int(c)}
                     for i, c in zip(pairs[sel, 1], labels)]
    clusters = pd.DataFrame(rows)
    named = circuit_concepts(clusters, P, names)
    out = clusters.merge(named[["unit", "layer", "cluster", "concept"]], on=["unit", "layer", "cluster"])
    per = (time.perf_counter() - t0) / len(units)
    return out, [{"method": "pure", "layer": layer, "unit": u, "seconds": per} for u in units]
