"""Top Impact and area-chart data (docs/methods.md): why a unit's whole range matters.

Top Impact: zero unit k (its whole map) and, per input, I_k = (dAcc - dL) / 2 with
dAcc = ([f(x) right] - [f_~k(x) right]) / sum_j [f(x_j) right] and
dL = (L(f(x), y) - L(f_~k(x), y)) / sum_j L(f(x_j), y); TI_k(beta) is the share of
sum |I_k| held by the ceil(beta N) inputs where the unit is most active.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from tqdm import tqdm

BETAS = (0.0003, 0.002, 0.005, 0.02, 0.1, 0.5)
UNITS_PER_CHUNK = 64


def impacts(ab, units=None) -> np.ndarray:
    """(U, N) per-input impact of zeroing each unit (of `units`; NaN rows for the others);
    `ab` a `nexplain.linear.ablation.Ablation`."""
    import torch  # torch on use: the jobs that only merge or plot start ~2 s sooner

    right = (ab.logits.argmax(1) == ab.y).double()
    n_right, total_loss = right.sum().item(), ab.base.double().sum().item()
    todo = np.arange(ab.n_units) if units is None else np.asarray(units)
    out = np.full((ab.n_units, len(ab.y)), np.nan)
    step = ab.unit_chunk()
    with torch.no_grad():
        for s in tqdm(range(0, len(todo), step), desc="Top Impact", unit="chunk", disable=len(todo) <= step):
            units = todo[s:s + step]
            logits = ab.replaced_logits(units, torch.zeros(len(ab.y), len(units), dtype=ab.acts.dtype,
                                                           device=ab.acts.device))
            d_acc = (right - (logits.argmax(-1) == ab.y).double()) / max(n_right, 1)
            d_loss = (ab.base.double() - ab._loss(logits).double()) / (total_loss or 1.0)
            out[units] = ((d_acc - d_loss) / 2).cpu().numpy()
    return out


def top_impact(I: np.ndarray, q: np.ndarray, betas=BETAS) -> np.ndarray:
    """(U, len(betas)) TI; NaN for a unit whose zeroing changes nothing."""
    I, q = np.abs(np.asarray(I, np.float64)), np.asarray(q, np.float64)
    n = I.shape[1]
    out = np.full((I.shape[0], len(betas)), np.nan)
    for u in range(I.shape[0]):
        total = I[u].sum()
        if not total > 0:  # no impact (dead), or not computed (NaN)
            continue
        order = np.argsort(-q[:, u], kind="stable")
        cum = np.cumsum(I[u][order])
        out[u] = [cum[max(1, math.ceil(b * n)) - 1] / total for b in betas]
    return out


def area_chart(q: np.ndarray, P: np.ndarray, names, buckets: int = 8) -> pd.DataFrame:
    """Per unit, 8 equal activation buckets on [0, max]; per bucket the share of its inputs
    having each label (P > 0.5). Values <= 0 fall in the first bucket."""
    q, on = np.asarray(q, np.float64), np.asarray(P) > 0.5
    rows = []
    for u in range(q.shape[1]):
        top = q[:, u].max()
        edges = np.linspace(0, top, buckets + 1) if top > 0 else np.zeros(buckets + 1)
        b = np.clip(np.searchsorted(edges, q[:, u], side="left") - 1, 0, buckets - 1)
        counts = np.bincount(b, minlength=buckets)
        hits = np.zeros((buckets, on.shape[1]))
        np.add.at(hits, b, on)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = hits / counts[:, None]
        for k in range(buckets):
            rows.append({"unit": u, "bucket": k, "lo": edges[k], "hi": edges[k + 1],
                         "n_inputs": int(counts[k]), **dict(zip(names, share[k]))})
    return pd.DataFrame(rows)


def top_impact_table(I: np.ndarray, q: np.ndarray, betas=BETAS) -> pd.DataFrame:
    """One row per unit: TI at each beta (`ti_<beta>`), the total |impact|, dead (no impact)."""
    ti = top_impact(I, q, betas)
    computed = ~np.isnan(I).any(axis=1)
    df = pd.DataFrame({"unit": np.arange(len(I), dtype=np.int32), "computed": computed,
                       "total_impact": np.where(computed, np.abs(np.nan_to_num(I)).sum(axis=1), np.nan)})
    for j, b in enumerate(betas):
        df[f"ti_{b}"] = ti[:, j]
    df["dead"] = computed & np.isnan(ti[:, 0])
    return df


def plot_top_impact(df: pd.DataFrame, betas, title: str, path) -> None:
    """Median and interquartile band of TI(beta) over the live units, beside the share of
    inputs itself (what TI would be if impact did not depend on activation)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nexplain.figures import save_png

    live = df[df["computed"] & ~df["dead"]]
    ti = live[[f"ti_{b}" for b in betas]].to_numpy()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if len(ti):
        lo, med, hi = np.percentile(ti, [25, 50, 75], axis=0)
        ax.fill_between(betas, lo, hi, alpha=0.3, label="units, 25-75%")
        ax.plot(betas, med, marker="o", label=f"median of {len(ti)} units")
    ax.plot(betas, betas, "k--", lw=1, label="share of inputs")
    ax.set(xscale="log", xlabel="beta: top fraction of inputs by activation",
           ylabel="share of total |impact|", ylim=(0, 1.02), title=f"Top Impact, {title}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
