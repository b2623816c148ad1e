"""The ground-truth table and figure of the report: method x kind of planted unit, sanity rows beside."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from nexplain.figures import save_png
from nexplain.report.unit_pages import html_table

SHOWN = ("recovered", "set_f1", "mask_iou", "pearson", "auprc", "f1", "iou", "range_recovery", "ari", "seconds")
HEAT = (("recovered", "exact recovery"), ("set_f1", "concept-set F1"), ("pearson", "Pearson with the planted function"))


def metrics_json(summary: pd.DataFrame, planting: pd.DataFrame, accuracy: dict) -> dict:
    """Flat `variant.method.metric` over every kind (DVC metrics, MLflow), the planting checks and
    the accuracies; NaN left out."""
    out = {f"accuracy.{k}": round(float(v), 6) for k, v in accuracy.items()}
    out["planting.passed"] = int(planting["passed"].sum())
    out["planting.units"] = len(planting)
    out["planting.min_corr"] = round(float(planting["corr"].min()), 6)
    for r in summary[summary["kind"] == "all"].itertuples():
        for m in ("recovered", "set_f1", "mask_iou", "pearson", "auprc", "f1", "iou"):
            v = getattr(r, m)
            if np.isfinite(v):
                out[f"{r.variant}.{r.method}.{m}"] = round(float(v), 6)
    return out


def _table(df: pd.DataFrame) -> str:
    """A DataFrame as the unit pages' HTML table (NaN shown as a dash)."""
    return html_table(list(df.columns), df.astype(object).to_numpy().tolist())


def truth_html(summary: pd.DataFrame, planting: pd.DataFrame, grades: pd.DataFrame, accuracy: dict) -> str:
    """A self-contained page: the planting checks, method x kind on the planted model, the sanity rows,
    and every unit's explanation per method."""
    planted = summary[summary["variant"] == "planted"]
    sanity = summary[(summary["kind"] == "all")]
    units = grades[grades["variant"] == "planted"][["layer", "unit", "kind", "method", "explanation",
                                                    "recovered", "set_f1", "pearson"]]
    acc = ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items())
    style = ("body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}th{background:#eee}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Ground truth</title><style>{style}</style>"
            f"</head><body><h1>Ground truth: planted units</h1><p>Test accuracy: {html.escape(acc)}.</p>"
            "<h2>Did the planting work (test split)</h2>"
            "<p>corr: Pearson of the unit's map with its planted function at the layer's resolution; top_iou: "
            "IoU of its top cells (as many as the planted cells) with them; passed: corr &ge; 0.9 or top_iou &ge; 0.8.</p>"
            + _table(planting) +
            "<h2>Grades on the planted model, by kind of unit</h2>" + _table(planted[["method", "kind", "units", *SHOWN]]) +
            "<h2>Sanity rows: every variant, every kind</h2><p>random: the same network untrained; shuffled: "
            "explanations from concept labels permuted across images; constant: one prediction for every image. "
            "They should score near chance (Pearson near 0, AUPRC near the share of images where the unit fires, "
            "nothing recovered).</p>"
            + _table(sanity[["variant", "method", "units", *SHOWN]]) +
            "<h2>Every planted unit</h2>" + _table(units) + "</body></html>\n")


def truth_figure(path, summary: pd.DataFrame) -> None:
    """Heatmaps of method x kind on the planted model (recovery, concept-set F1, Pearson), and the
    mean Pearson of every variant per method (the sanity rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    planted = summary[(summary["variant"] == "planted") & (summary["kind"] != "all")]
    methods = list(dict.fromkeys(planted["method"]))
    kinds = list(dict.fromkeys(planted["kind"]))
    fig, axes = plt.subplots(1, len(HEAT) + 1, figsize=(5.2 * (len(HEAT) + 1), 0.45 * len(methods) + 2.4))
    for ax, (metric, title) in zip(axes, HEAT):
        grid = planted.pivot(index="method", columns="kind", values=metric).reindex(index=methods, columns=kinds)
        im = ax.imshow(grid.to_numpy(float), vmin=0 if metric != "pearson" else -1, vmax=1, cmap="viridis",
                       aspect="auto")
        for (i, j), v in np.ndenumerate(grid.to_numpy(float)):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="w" if v < 0.6 else "k")
        ax.set_xticks(range(len(kinds)), kinds, rotation=30, ha="right")
        ax.set_yticks(range(len(methods)), methods)
        ax.set_xlabel("kind of planted unit")
        ax.set_ylabel("method")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046, label=metric)
    ax = axes[-1]
    allk = summary[summary["kind"] == "all"]
    methods = list(dict.fromkeys([*methods, *allk["method"]]))  # the constant explanation too
    variants = list(dict.fromkeys(allk["variant"]))
    width = 0.8 / len(variants)
    for k, v in enumerate(variants):
        part = allk[allk["variant"] == v].set_index("method").reindex(methods)
        ax.barh(np.arange(len(methods)) + k * width, part["pearson"].to_numpy(float), height=width, label=v)
    ax.set_yticks(np.arange(len(methods)) + 0.4 - width / 2, methods)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("mean Pearson with the planted function (test)")
    ax.set_title("planted vs sanity rows")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
