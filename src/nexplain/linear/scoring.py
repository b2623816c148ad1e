"""Simulation scores of every explainer of a layer, side by side (docs/methods.md).

Each explainer table becomes rows (explainer, unit, cluster, terms, bias): LE tables give
their weighted concepts and bias; NetDissect, CoEx and each Clustered CoEx range give
their formula with weight 1. Per row: the correlation score on test and, for each
scaling, the ablation score on test with (c, d) fitted on val.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from nexplain.linear.simulate import SCALINGS, Simulator, norm_scaling, pearson

log = logging.getLogger(__name__)

FORMULA_METHODS = ("netdissect", "coex", "clustered")


def explanation_rows(name: str, table: pd.DataFrame) -> pd.DataFrame:
    """(explainer, unit, cluster, terms, bias, dead) for one explanation table: a linear one
    (weights, concepts) or a formula one (formula, status)."""
    if "weights" in table.columns:
        terms = [list(zip(w, c)) for w, c in zip(table["weights"], table["concepts"])]
        return pd.DataFrame({"explainer": name, "unit": table["unit"], "cluster": -1, "terms": terms,
                             "bias": table["bias"], "dead": table["dead"]})
    dead = table["status"] != "ok"
    terms = [[] if d or f is None else [(1.0, f)] for f, d in zip(table["formula"], dead)]
    return pd.DataFrame({"explainer": name, "unit": table["unit"], "cluster": table["cluster"],
                         "terms": terms, "bias": 0.0, "dead": dead})


def score_rows(rows: pd.DataFrame, sim: Simulator, q: np.ndarray, masks: dict, ablation: dict | None,
               scalings=SCALINGS, optim: dict | None = None, ablate_units=None) -> pd.DataFrame:
    """Correlation and ablation scores per row. `q` (N, U) unit activations on the
    simulator's images; `ablation` {"val": Ablation, "test": Ablation} or None;
    `ablate_units`: the units that get ablation scores (default all)."""
    va, te = masks["val"], masks["test"]
    S = np.column_stack([sim.simulate(t, b) for t, b in zip(rows["terms"], rows["bias"])]) \
        if len(rows) else np.zeros((len(q), 0))
    units = rows["unit"].to_numpy()
    out = rows[["explainer", "unit", "cluster", "dead"]].copy()
    out["length"] = [len(t) for t in rows["terms"]]
    out["corr_test"] = [pearson(S[te, j], q[te, u]) for j, u in enumerate(units)]
    out["corr_val"] = [pearson(S[va, j], q[va, u]) for j, u in enumerate(units)]
    live = ~out["dead"].to_numpy() & (out["length"].to_numpy() > 0)
    if ablate_units is not None:
        live &= np.isin(units, ablate_units)
    for scaling in SCALINGS:
        out[f"ablation_{scaling}"] = np.nan
        out[f"c_{scaling}"] = np.nan
        out[f"d_{scaling}"] = np.nan
    if ablation is None or not live.any():
        return out
    j_live, u_live = np.flatnonzero(live), units[live]
    uniq, first = np.unique(u_live, return_inverse=True)  # the mean replacement, once per unit
    q_te = q[te][:, uniq]
    den = ablation["test"].deviation(uniq, np.broadcast_to(q_te.mean(0), q_te.shape).copy())[first]
    for scaling in scalings:
        if scaling == "norm":
            cd = np.array([norm_scaling(S[va, j], q[va, u]) for j, u in zip(j_live, u_live)]).reshape(-1, 2)
            c, d = cd[:, 0], cd[:, 1]
        else:
            c, d = ablation["val"].optim_scaling(u_live, S[va][:, j_live], **(optim or {}))
        V = S[te][:, j_live] * c + d
        out.loc[live, f"ablation_{scaling}"] = ablation["test"].score(u_live, V, None, den)
        out.loc[live, f"c_{scaling}"] = c
        out.loc[live, f"d_{scaling}"] = d
        log.info("ablation (%s): %d rows scored", scaling, int(live.sum()))
    return out


def summary(scores: pd.DataFrame) -> dict:
    """Mean scores per explainer (dead rows and NaNs left out), for DVC metrics and MLflow."""
    out = {}
    for name, g in scores.groupby("explainer", sort=True):
        cols = [c for c in g.columns if c.startswith(("corr_", "ablation_"))]
        out[name] = {c: float(g[c].mean()) if g[c].notna().any() else None for c in cols} | \
            {"rows": int(len(g)), "scored": int(g["corr_test"].notna().sum())}
    return out


def layer_ablations(tail, ids: np.ndarray, Q: np.ndarray, maps_path, labels, temperature: float,
                    select: dict[str, np.ndarray], compute=None, inputs=None) -> dict:
    """An Ablation per named image selection (boolean over `ids`). A linear tail uses the
    pooled activations Q; any other replays the tail on the layer's cached maps, or on
    `inputs(image ids)` -> (maps, extras) where given (an image tower: `linear.towers`).
    Targets are the dataset's class labels, or the model's own predictions where it has none."""
    from nexplain.activations.read import read_all_maps
    from nexplain.linear.ablation import Ablation  # torch on use: the jobs that only merge or plot start ~2 s sooner

    out = {}
    for name, mask in select.items():
        extras = ()
        if tail.linear is not None:
            acts = Q[mask]
        elif inputs is not None:
            acts, extras = inputs(ids[mask])
        else:
            map_ids, acts = read_all_maps(maps_path, ids[mask])
            acts = acts[np.searchsorted(map_ids, ids[mask])]
        y = None if labels is None else np.asarray(labels)[ids[mask]]
        if y is not None and (y < 0).any():
            y = None
        if y is None:
            log.info("%s: no class labels for every image; the model's predictions are the targets", name)
        out[name] = Ablation(tail, acts, y, temperature, compute, extras=extras)
    return out
