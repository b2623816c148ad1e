"""The score report of one layer: every method on the same units, from the method tables.

One long table (`section`, `method`, `simulator`, `metric`, `mean`, `std`, `n`) holds:
- `metrics`: IoU-family metrics of the formula explainers (docs/methods.md), over the units
  (and clustered ranges) they explained;
- `length`: explanation length of every explainer;
- `search`: where the search is exact, the beam's IoU, the optimum's and the gap between
  them, and the share of units (or ranges) where the beam fell short;
- `simulation`: correlation and ablation scores per explainer and simulator (docs/methods.md);
- `top_impact`: TI(beta) over the units where it was computed;
- `pure`: the per-earlier-layer distance correlations (docs/methods.md);
- `causal`: per explainer, the mean signed effect on each unit of rendering its explanation's
  concepts in and out, and the share of units it moves (docs/causal.md), beside a random-concept row;
- `copy_paste`: the flip rate of pasting each class's explained concepts, and of random ones;
- `specialization`: per epoch of training (`epoch_0`: the random init) and activation range, the
  share of units whose range is unspecialized, weakly specialized or specialized (docs/specialization.md);
- `neuroneval`: NeuronEval's passing metrics (Pearson, cosine, AUPRC, F1, IoU) of each
  explainer's predicted concept activation against the unit's, over every explained unit.
Means skip dead units and undefined (NaN) scores; `n` says how many entered. A per-unit table
joins every method's explanation of each unit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FORMULA_METRICS = ("iou", "detection_accuracy", "activation_coverage", "sample_coverage", "explanation_coverage")
SIM_METRICS = ("corr_test", "ablation_optim", "ablation_norm")
NEURONEVAL = ("pearson", "cosine", "auprc", "f1", "iou")
COLUMNS = ["section", "method", "simulator", "metric", "mean", "std", "n"]


def _row(section, method, simulator, metric, values) -> tuple:
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    return (section, method, simulator, metric, float(v.mean()) if len(v) else np.nan,
            float(v.std(ddof=0)) if len(v) else np.nan, int(len(v)))


def summary_table(formulas: dict[str, pd.DataFrame], linear: dict[str, pd.DataFrame],
                  simulations: dict[str, pd.DataFrame], top_impact: pd.DataFrame | None = None,
                  pure: pd.DataFrame | None = None, neuroneval: pd.DataFrame | None = None,
                  efficacy: pd.DataFrame | None = None, paste: pd.DataFrame | None = None,
                  specialization: pd.DataFrame | None = None) -> pd.DataFrame:
    """The long score table; `formulas` {netdissect|coex|clustered: table}, `linear`
    {le_<source>: table}, `simulations` {simulator: table}."""
    rows = []
    for name, t in formulas.items():
        ok = t[t["status"] == "ok"]
        rows += [_row("metrics", name, "", m, ok[m]) for m in FORMULA_METRICS]
        rows.append(_row("length", name, "", "length", ok["length"]))
        exact = ok[np.isfinite(ok["gap"])] if "gap" in ok else ok.iloc[:0]
        if len(exact):
            rows += [_row("search", name, "", "beam_iou", exact["beam_iou"]),
                     _row("search", name, "", "optimum_iou", exact["iou"]),
                     _row("search", name, "", "gap", exact["gap"]),
                     _row("search", name, "", "beam_below_optimum", exact["gap"] > 0)]
    for name, t in linear.items():
        rows.append(_row("length", name, "", "length", t.loc[~t["dead"], "length"]))
    for sim, t in simulations.items():
        live = t[~t["dead"]]
        for name, part in live.groupby("explainer", sort=False):
            rows += [_row("simulation", name, sim, m, part[m]) for m in SIM_METRICS if m in part]
    if top_impact is not None:
        done = top_impact[top_impact["computed"] & ~top_impact["dead"]]
        rows += [_row("top_impact", "top_impact", "", c, done[c]) for c in top_impact.columns if c.startswith("ti_")]
    if pure is not None:
        for r in pure.itertuples():
            rows.append(("pure", r.layer, "", "corr", float(r.corr_mean), float(r.corr_std), int(r.units)))
            rows.append(("pure", r.layer, "", "baseline", float(r.baseline_mean), np.nan, int(r.units)))
            rows.append(("pure", r.layer, "", "ceiling", float(r.ceiling_mean), np.nan, int(r.units)))
    if efficacy is not None:
        for name, part in efficacy[efficacy["n_concepts"] > 0].groupby("method", sort=False):
            rows += [_row("causal", name, "", "effect", part["effect"]), _row("causal", name, "", "moved", part["moved"])]
    if paste is not None and len(paste):
        rows += [_row("copy_paste", "paste", "", m, paste[m]) for m in ("flip_explained", "flip_random")]
    if specialization is not None:  # one layer's rows; shares, not means over units
        for r in specialization.sort_values(["epoch", "range"]).itertuples():
            rows += [("specialization", f"epoch_{r.epoch}", "", f"range{r.range + 1}_{c}", float(getattr(r, c)),
                      np.nan, int(r.units)) for c in ("unspecialized", "weak", "specialized")]
    if neuroneval is not None:
        for name, part in neuroneval.groupby("method", sort=False):
            rows += [_row("neuroneval", name, "", m, part[m]) for m in NEURONEVAL]
    return pd.DataFrame(rows, columns=COLUMNS)


def metrics_json(table: pd.DataFrame) -> dict:
    """Flat `section.method[.simulator].metric -> mean` for DVC metrics (NaN left out)."""
    out = {}
    for r in table.itertuples():
        if np.isfinite(r.mean):
            out[".".join(p for p in (r.section, r.method, r.simulator, r.metric) if p)] = round(float(r.mean), 6)
    return out


DEAD = "(dead)"  # a dead unit's explanation text: its numbers are NaN, never printed as "nan"
NONE = "(none)"  # a live unit or range that no concept explains


def _linear_text(row) -> str:
    if row["dead"]:
        return DEAD
    terms = " + ".join(f"{w:.2f} {c}" for w, c in zip(row["weights"], row["concepts"]))
    return f"{terms} {'+' if row['bias'] >= 0 else '-'} {abs(row['bias']):.2f}" if terms else NONE


def _ranges_text(g: pd.DataFrame) -> str:
    """`lo-hi: formula` per range of one unit; a dead unit has one row, status dead, no range."""
    if (g["status"] == "dead").all():
        return DEAD
    return " | ".join(f"{lo:.2f}-{hi:.2f}: {f if isinstance(f, str) and f else NONE}"
                      for lo, hi, f in zip(g["lo"], g["hi"], g["formula"]))


def _formula_text(t: pd.DataFrame) -> pd.Series:
    return t["formula"].where(t["status"] != "dead", DEAD)


def unit_table(formulas: dict[str, pd.DataFrame], linear: dict[str, pd.DataFrame],
               simulation: pd.DataFrame | None = None, top_impact: pd.DataFrame | None = None,
               beta: str = "ti_0.02", efficacy: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per unit: each method's explanation (clustered: one `lo-hi: formula` per range)
    with its IoU or val correlation, the test correlation of each explainer under
    `simulation`, TI at `beta`, and each explanation's causal efficacy (`<method>_effect`,
    docs/causal.md). A dead unit's explanation reads DEAD; its scores stay NaN."""
    units = sorted(set().union(*(set(t["unit"]) for t in [*formulas.values(), *linear.values()])))
    out = pd.DataFrame({"unit": np.asarray(units, np.int64)}).set_index("unit")
    for name, t in formulas.items():
        if name == "clustered":
            out[name] = t.sort_values(["unit", "cluster"]).groupby("unit").apply(_ranges_text, include_groups=False)
            out[f"{name}_iou"] = t.groupby("unit")["iou"].mean()
        else:
            u = t.set_index("unit")
            out[name], out[f"{name}_iou"] = _formula_text(u), u["iou"]
    for name, t in linear.items():
        u = t.set_index("unit")
        out[name] = u.apply(_linear_text, axis=1)
        out[f"{name}_val_corr"] = u["val_corr"]
    if simulation is not None:
        corr = simulation.groupby(["unit", "explainer"])["corr_test"].mean().unstack()
        for name in corr.columns:
            out[f"{name}_corr_test"] = corr[name]
    if top_impact is not None and beta in top_impact:
        out[beta] = top_impact.set_index("unit")[beta]
    if efficacy is not None:
        effect = efficacy.pivot_table(index="unit", columns="method", values="effect", aggfunc="first", dropna=False)
        for name in [*formulas, *linear]:
            if name in effect.columns:
                out[f"{name}_effect"] = effect[name]
    return out.reset_index()
