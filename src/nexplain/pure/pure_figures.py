"""Figures of PURE circuits: per unit, and the per-layer summary (the variant's Figure 3).

2-D embeddings use PCA (scikit-learn): deterministic and without umap-learn's numba
compilation at every job start.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nexplain.data.images import load_image
from nexplain.figures import save_png

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def _pca2(R: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA

    R = np.asarray(R, np.float64)
    if len(R) < 3 or np.allclose(R, R[0]):
        return np.zeros((len(R), 2))
    return PCA(n_components=2, random_state=0).fit_transform(R)


def _sorted_distances(X: np.ndarray, order: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import pdist, squareform

    return squareform(pdist(np.asarray(X, np.float64)[order]))


def unit_figure(path, unit: int, images: np.ndarray, relevance: dict[str, np.ndarray],
                labels: dict[str, np.ndarray], reference: np.ndarray, scores: pd.DataFrame,
                paths: list[str], show_layer: str, concepts: dict | None = None, heatmap=None,
                per_cluster: int = 6) -> None:
    """One PNG: PCA of the relevances per earlier layer coloured by circuit; the reference and
    relevance distance matrices (images ordered by `show_layer`'s circuits); the top images
    of each of `show_layer`'s circuits, titled with `concepts[c]` = (best concept, IoU) and
    overlaid with `heatmap(c, images)` (n, h, w), the circuit's relevance (red +, blue -)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(relevance)
    k = int(max(labels[show_layer].max() + 1, 1))
    fig = plt.figure(figsize=(3.2 * (len(layers) + 1), 9.5))
    grid = fig.add_gridspec(3, len(layers) + 1, height_ratios=[1, 1, 0.9])
    order = np.argsort(labels[show_layer], kind="stable")
    for j, layer in enumerate(layers):
        ax = fig.add_subplot(grid[0, j])
        xy = _pca2(relevance[layer])
        for c in range(labels[layer].max() + 1):
            m = labels[layer] == c
            ax.scatter(xy[m, 0], xy[m, 1], s=14, color=COLORS[c % len(COLORS)], label=f"circuit {c}")
        corr = scores.loc[scores["layer"] == layer, "corr"]
        ax.set_title(f"{layer}: r = {corr.iloc[0]:.2f}" if len(corr) else layer, fontsize=9)
        ax.set_xlabel("relevance PC 1", fontsize=7), ax.set_ylabel("relevance PC 2", fontsize=7)
        ax.tick_params(labelsize=6)
        if j == 0:
            ax.legend(fontsize=7, loc="best")
        _distances(fig, fig.add_subplot(grid[1, j]), relevance[layer], order, f"{layer} relevance")
    ax = fig.add_subplot(grid[0, len(layers)])
    ax.axis("off")
    ax.text(0, 0.5, f"unit {unit}\n{len(images)} top images\ncircuits shown: {show_layer}", fontsize=10)
    _distances(fig, fig.add_subplot(grid[1, len(layers)]), reference, order, "reference embedding")
    sub = grid[2, :].subgridspec(k, per_cluster)
    for c in range(k):
        members = images[labels[show_layer] == c][:per_cluster]
        heat = heatmap(c, members) if heatmap is not None and len(members) else None
        for t in range(per_cluster):
            ax = fig.add_subplot(sub[c, t])
            ax.axis("off")
            if t < len(members):
                image = load_image(paths[int(members[t])])
                ax.imshow(image)
                if heat is not None:
                    lim = float(np.abs(heat[t]).max()) or 1.0
                    ax.imshow(heat[t], cmap="bwr", vmin=-lim, vmax=lim, alpha=0.55,
                              extent=(-0.5, image.width - 0.5, image.height - 0.5, -0.5))
                if t == 0:
                    ax.set_title(_circuit_title(c, (concepts or {}).get(c)), fontsize=8,
                                 color=COLORS[c % len(COLORS)], loc="left")
    fig.tight_layout()
    _save(fig, path)


def _circuit_title(c: int, named) -> str:
    if not named or named[0] is None:
        return f"circuit {c}"
    return f"circuit {c}: {named[0]} (IoU {named[1]:.2f})"


def _distances(fig, ax, X: np.ndarray, order: np.ndarray, what: str) -> None:
    """The Euclidean distance matrix of the top images, in circuit order, with its colorbar."""
    im = ax.imshow(_sorted_distances(X, order), cmap="viridis")
    ax.set_title(f"distances, {what}", fontsize=8)
    ax.set_xlabel("top image (by circuit)", fontsize=7), ax.set_ylabel("top image", fontsize=7)
    ax.tick_params(labelsize=6)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)


def summary_figure(path, table: pd.DataFrame, layer: str, reference: str) -> None:
    """Mean +- std correlation per earlier layer, with the activation baseline and the ceiling."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    x = np.arange(len(table))
    ax.errorbar(x, table["corr_mean"], yerr=table["corr_std"], fmt="o-", capsize=4, label="relevance")
    ax.plot(x, table["baseline_mean"], "s--", color="gray", label=f"{layer} activations (baseline)")
    if table["ceiling_mean"].notna().any():
        ax.plot(x, table["ceiling_mean"], "^:", color="black", label="second embedding (ceiling)")
    ax.set_xticks(x, table["layer"])
    ax.set_ylabel(f"distance correlation with {reference}")
    ax.set_title(f"Which layer disentangles {layer} units", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path) -> None:
    save_png(fig, path)
