"""Figures of the score report (PNG, matplotlib, no timestamps): the method comparison, the
correlation-versus-ablation scatter and the Top Impact curve of one layer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nexplain.figures import save_png


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    save_png(fig, path)


def method_bars(path, table: pd.DataFrame, layer: str) -> None:
    """Mean test correlation (+- std) of every explainer, one bar group per simulator."""
    plt = _plt()
    sim = table[(table["section"] == "simulation") & (table["metric"] == "corr_test")]
    methods = list(dict.fromkeys(sim["method"]))
    sims = list(dict.fromkeys(sim["simulator"]))
    fig, ax = plt.subplots(figsize=(1.3 + 1.1 * len(methods), 3.6))
    width = 0.8 / max(len(sims), 1)
    for j, s in enumerate(sims):
        part = sim[sim["simulator"] == s].set_index("method").reindex(methods)
        ax.bar(np.arange(len(methods)) + (j - (len(sims) - 1) / 2) * width, part["mean"], width,
               yerr=part["std"], capsize=3, label=f"simulator {s}")
    ax.set_xticks(np.arange(len(methods)), methods, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test correlation (mean over units)")
    ax.set_title(f"{layer}: how well each explanation simulates its unit", fontsize=10)
    ax.axhline(0, color="black", lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def corr_vs_ablation(path, simulation: pd.DataFrame, layer: str, simulator: str) -> None:
    """Per explanation: test correlation against the ablation score (the best scaling scored)."""
    plt = _plt()
    score = "ablation_optim" if simulation.get("ablation_optim", pd.Series(dtype=float)).notna().any() else "ablation_norm"
    live = simulation[~simulation["dead"]].dropna(subset=["corr_test", score])
    fig, ax = plt.subplots(figsize=(5, 4))
    groups = sorted(live.groupby("explainer", sort=False), key=lambda g: -len(g[1]))  # the crowd first, below
    for name, part in groups:
        ax.scatter(part["corr_test"], part[score], s=6, alpha=0.5, label=name)
    ax.set_xlabel("test correlation")
    ax.set_ylabel(score.replace("_", " "))
    ax.set_title(f"{layer}, simulator {simulator}", fontsize=10)
    ax.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    _save(fig, path)


def top_impact_curve(path, top_impact: pd.DataFrame, layer: str) -> None:
    """Mean TI(beta) over units against beta, beside TI = beta (impact spread evenly)."""
    plt = _plt()
    cols = [c for c in top_impact.columns if c.startswith("ti_")]
    done = top_impact[top_impact["computed"] & ~top_impact["dead"]]
    beta = np.array([float(c[3:]) for c in cols])
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    if len(done):
        q = done[cols].quantile([0.25, 0.5, 0.75]).to_numpy()
        ax.fill_between(beta, q[0], q[2], alpha=0.25, label="units, quartiles")
        ax.plot(beta, done[cols].mean().to_numpy(), "o-", label=f"mean over {len(done)} units")
    ax.plot(beta, beta, "k:", label="TI = beta")
    ax.set_xscale("log")
    ax.set_xlabel("beta (top share of inputs by activation)")
    ax.set_ylabel("Top Impact: share of |impact|")
    ax.set_title(f"{layer}: Top Impact", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def area_proportions(buckets: pd.DataFrame, top: int = 8, skip=("border", "core")) -> pd.DataFrame:
    """Per bucket (row), the proportion of its label occurrences held by each of the `top` labels
    (largest peak proportion first) and by the rest ("other"): each row sums to 1, or to 0 in a
    bucket without inputs or labels."""
    cols = [c for c in buckets.columns if c not in ("unit", "bucket", "lo", "hi", "n_inputs") and c not in skip]
    raw = buckets[cols].fillna(0.0)
    total = raw.sum(axis=1).to_numpy()
    shares = raw.div(np.where(total > 0, total, 1.0), axis=0)
    keep = shares.max().sort_values(ascending=False, kind="stable").index[:top].tolist()
    out = shares[keep].copy()
    out["other"] = (1.0 - shares[keep].sum(axis=1)).clip(lower=0).where(total > 0, 0.0)
    return out.reset_index(drop=True)


def area_chart(path, buckets: pd.DataFrame, unit: int, top: int = 8, skip=("border", "core")) -> None:
    """Proportions of the `top` concepts or classes (largest peak proportion) across one unit's
    activation buckets (docs/methods.md), stacked to 1 with the rest as "other", with the
    inputs per bucket above. An image holds several labels, so a bucket's shares are
    normalised to proportions of its label occurrences, as the LE paper draws them."""
    plt = _plt()
    stack = area_proportions(buckets, top, skip)
    keep, other = list(stack.columns[:-1]), stack["other"]
    shares = stack
    mid = ((buckets["lo"] + buckets["hi"]) / 2).to_numpy()
    fig, (ax0, ax) = plt.subplots(2, 1, figsize=(6, 4.4), sharex=True, gridspec_kw={"height_ratios": [1, 3]})
    ax0.bar(mid, buckets["n_inputs"], width=(buckets["hi"] - buckets["lo"]).to_numpy() * 0.9, color="gray")
    ax0.set_yscale("log")
    ax0.set_ylabel("inputs", fontsize=8)
    ax0.set_title(f"unit {unit}: what its activation range holds", fontsize=10)
    ax.stackplot(mid, *[shares[c].to_numpy() for c in keep], other.to_numpy(), labels=[*keep, "other"],
                 colors=[*plt.cm.tab10.colors[:len(keep)], "lightgray"], alpha=0.85)
    ax.set_xlabel("activation (bucket centre)")
    ax.set_ylabel("proportion of labels")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _save(fig, path)


def linear_weights(path, explanations: dict[str, pd.Series], unit: int) -> None:
    """One unit's Linear Explanations: concept weights per source, side by side."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(explanations), figsize=(3.4 * len(explanations), 3.2), squeeze=False)
    for ax, (name, row) in zip(axes[0], explanations.items()):
        w = np.asarray(row["weights"], float)
        order = np.argsort(-np.abs(w))
        ax.barh(np.arange(len(w)), w[order], color=np.where(w[order] >= 0, "tab:blue", "tab:red"))
        ax.set_yticks(np.arange(len(w)), [row["concepts"][i] for i in order], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.5)
        ax.set_xlabel("weight (activation per unit of concept score)", fontsize=8)
        ax.set_title(f"{name}: val r = {row['val_corr']:.2f}", fontsize=9)
    fig.suptitle(f"unit {unit}: Linear Explanations", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


SPECIALIZATION_COLORS = {"unspecialized": "#d62728", "weak": "#ff9896", "specialized": "#2ca02c",
                         "unexplained": "#c7c7c7", "dead": "#7f7f7f"}


def specialization_bars(path, shares: pd.DataFrame) -> None:
    """Progressive specialization: per layer (rows) and activation range (columns), the share of
    units in each class (nexplain.compositional.specialization) at every epoch, stacked."""
    plt = _plt()
    layers, ranges = sorted(set(shares["layer"])), sorted(set(shares["range"]))
    fig, axes = plt.subplots(len(layers), len(ranges), figsize=(1.9 * len(ranges) + 1.2, 2.2 * len(layers) + 0.6),
                             squeeze=False, sharey=True)
    for i, layer in enumerate(layers):
        for j, r in enumerate(ranges):
            ax, part = axes[i, j], shares[(shares["layer"] == layer) & (shares["range"] == r)].sort_values("epoch")
            x, bottom = np.arange(len(part)), np.zeros(len(part))
            for c, color in SPECIALIZATION_COLORS.items():
                ax.bar(x, part[c], 0.8, bottom=bottom, color=color, label=c if (i, j) == (0, 0) else None)
                bottom += part[c].to_numpy()
            ax.set_xticks(x, [str(e) for e in part["epoch"]], fontsize=7)
            ax.set_ylim(0, 1)
            if i == 0:
                ax.set_title(f"range {r + 1}" + (" (lowest)" if r == 0 else " (highest)" if r == ranges[-1] else ""),
                             fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{layer}\nshare of units", fontsize=8)
            if i == len(layers) - 1:
                ax.set_xlabel("epoch (0: random init)", fontsize=7)
    fig.legend(loc="upper center", ncol=len(SPECIALIZATION_COLORS), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    _save(fig, path)
