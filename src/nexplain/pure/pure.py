"""PURE circuits and the Kawashima evaluation (docs/methods.md).

Per unit and earlier layer: K-means on the unit's top-M relevance vectors gives its circuits;
the Pearson correlation between the lower triangles of the M x M Euclidean distance matrices
in relevance space and in a reference embedding space says how well that layer's relevances
separate what the reference sees as different. The same correlation with the reference
itself replaced by a second embedding gives a ceiling, and with relevances replaced by the
layer's own activation vectors a baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm import tqdm

K_RANGE = (2, 5)


def circuits(R: np.ndarray, k: int = 2, seed: int = 0) -> np.ndarray:
    """K-means labels (M,) of relevance vectors R (M, C); all zeros when R has fewer than k
    distinct rows (a dead unit: nothing to split)."""
    from sklearn.cluster import KMeans

    if not K_RANGE[0] <= k <= K_RANGE[1]:
        raise ValueError(f"k must be in {K_RANGE[0]}..{K_RANGE[1]}, got {k}")
    if len(np.unique(R, axis=0)) < k:
        return np.zeros(len(R), np.int64)
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(np.asarray(R, np.float64)).astype(np.int64)


def distance_correlation(X: np.ndarray, Y: np.ndarray) -> float:
    """Pearson correlation of the pairwise Euclidean distances of the rows of X and of Y
    (the lower triangles of the two distance matrices); NaN when either is constant."""
    from scipy.spatial.distance import pdist

    if len(X) != len(Y):
        raise ValueError(f"{len(X)} rows against {len(Y)}")
    dx, dy = pdist(np.asarray(X, np.float64)), pdist(np.asarray(Y, np.float64))
    if len(dx) < 2 or dx.std() == 0 or dy.std() == 0:
        return float("nan")
    return float(np.corrcoef(dx, dy)[0, 1])


def evaluate(units: np.ndarray, top: np.ndarray, relevance: dict[str, np.ndarray], rows: dict,
             reference: np.ndarray, ceiling: np.ndarray | None, own: np.ndarray,
             k: int = 2, seed: int = 0, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(circuit table, correlation table) for every unit and earlier layer.

    `top` (U, M) image ids per unit; `relevance[layer]` (P, C) with `rows[(unit, image)]` its
    row; `reference`, `ceiling`, `own`: (N, D) vectors indexed by image id (the reference
    embedding, a second one or None, and the unit's layer's activation vectors)."""
    clusters, scores = [], []
    for u, images in tqdm(zip(units, top), total=len(units), desc="PURE circuits", unit="unit",
                          disable=not progress):
        idx = [rows[int(u), int(i)] for i in images]
        ref = reference[images]
        base = {"unit": int(u), "baseline": distance_correlation(own[images], ref),
                "ceiling": distance_correlation(ceiling[images], ref) if ceiling is not None else np.nan}
        for layer, R in relevance.items():
            r = R[idx]
            labels = circuits(r, k, seed)
            dead = not np.abs(r).sum(1).any()
            clusters += [(int(u), layer, int(i), int(c)) for i, c in zip(images, labels)]
            scores.append({**base, "layer": layer, "corr": np.nan if dead else distance_correlation(r, ref),
                           "dead": dead, "cluster_sizes": np.bincount(labels, minlength=k).tolist()})
    ctab = pd.DataFrame(clusters, columns=["unit", "layer", "image_id", "cluster"])
    return ctab, pd.DataFrame(scores)[["unit", "layer", "corr", "baseline", "ceiling", "dead", "cluster_sizes"]]


def circuit_concepts(clusters: pd.DataFrame, P: np.ndarray, names: list[str],
                     threshold: float = 0.5) -> pd.DataFrame:
    """The concept that best explains each circuit: among a unit's top images, the concept whose
    images (P >= threshold) overlap the circuit's images with the largest IoU (ties: the first
    concept). `P` (N, C) indexed by image id. Columns: unit, layer, cluster, size, concept (None
    where no concept touches the circuit), iou."""
    rows = []
    for (unit, layer), g in clusters.groupby(["unit", "layer"], sort=False):
        present = np.asarray(P)[g["image_id"].to_numpy()] >= threshold  # (M, C)
        for c in np.unique(g["cluster"]):
            member = (g["cluster"] == c).to_numpy()
            inter = (present & member[:, None]).sum(0)
            iou = inter / np.maximum((present | member[:, None]).sum(0), 1)
            best = int(np.argmax(iou)) if len(names) else 0
            hit = len(names) > 0 and iou[best] > 0
            rows.append({"unit": int(unit), "layer": layer, "cluster": int(c), "size": int(member.sum()),
                         "concept": names[best] if hit else None, "iou": float(iou[best]) if hit else 0.0})
    return pd.DataFrame(rows, columns=["unit", "layer", "cluster", "size", "concept", "iou"])


def summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over units per earlier layer, with the baseline and ceiling beside them."""
    live = scores[~scores["dead"]]
    g = live.groupby("layer", sort=False)
    return pd.DataFrame({"corr_mean": g["corr"].mean(), "corr_std": g["corr"].std(ddof=0),
                         "baseline_mean": g["baseline"].mean(), "ceiling_mean": g["ceiling"].mean(),
                         "units": g.size()}).reset_index()
