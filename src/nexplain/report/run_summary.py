"""What a finished run printed last: where its results are, its headline numbers, and the
commands that open them. Read from the artifacts only, so `nexplain summary` prints the same
thing later; a result that is not there (a target not run yet) is left out, not guessed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

FORMULA_METHODS = ("netdissect", "coex", "clustered")


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(x, pct: bool = False) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def _le_val_corr(path: Path) -> float | None:
    try:
        t = pd.read_parquet(path, columns=["val_corr", "dead"])
    except (OSError, ValueError):
        return None
    live = t.loc[~t["dead"], "val_corr"].dropna()
    return float(live.mean()) if len(live) else None


def _targets(config: dict) -> list[tuple[str, str, str]]:
    targets = {(t["model"], t["dataset"], layer) for block in ("linear", "explain")
               for t in (config.get(block) or {}).get("targets", []) for layer in t["layers"]}
    return sorted(targets)


def headline_values(config: dict, workdir: str | Path = ".") -> dict[str, dict[str, float]]:
    """The run's headline numbers, grouped (DVC metrics, the end-of-run summary): per trained
    model its accuracy, per layer each method's mean IoU and each LE's val correlation, per
    trained VLM its zero-shot AUC, per PURE target each earlier layer's distance correlation.
    Groups and numbers whose artifacts are missing are left out."""
    root = Path(workdir) / config["results"]
    out: dict[str, dict[str, float]] = {}
    for name, spec in config.get("models", {}).items():
        m = _json(root / "models" / name / "metrics.json") if spec["source"] == "train" else None
        if m:
            out[name] = {k: m[k] for k in ("test_accuracy", "val_accuracy", "chance") if m.get(k) is not None}
    for model, dataset, layer in _targets(config):
        base = root / model / dataset / layer
        scores = _json(base / "report" / "scores.json") or {}
        group = {f"{m}_iou": scores[f"metrics.{m}.iou"] for m in FORMULA_METHODS if f"metrics.{m}.iou" in scores}
        group.update({f"{m}_beam_iou": scores[f"search.{m}.beam_iou"] for m in FORMULA_METHODS
                      if f"search.{m}.beam_iou" in scores})  # search: exact, the beam's IoU beside the optimum's
        for le in sorted((base / "explanations").glob("le_*.parquet")):
            corr = _le_val_corr(le)
            if corr is not None:
                group[f"{le.stem}_val_corr"] = round(corr, 6)
        if group:
            out[f"{model}/{dataset}/{layer}"] = group
    for name, spec in config.get("vlms", {}).items():
        z = _json(root / "vlms" / name / "zero_shot.json")
        if z and z.get("mean_auc") is not None:
            out[name] = {"zero_shot_auc": z["mean_auc"]}
    for t in (config.get("pure") or {}).get("targets", []):
        p = _json(root / t["model"] / t["dataset"] / t["layer"] / "pure" / "summary.json")
        if p:
            out[f"pure {t['model']}/{t['layer']}"] = {k.removesuffix(".corr_mean"): v for k, v in sorted(p.items())
                                                     if k.endswith(".corr_mean")}
    return out


def headline_lines(values: dict[str, dict[str, float]], reference: str | None = None) -> list[str]:
    """`headline_values` as lines of text, one per group; `reference`: PURE's reference embedding."""
    lines = []
    for group, v in values.items():
        if "test_accuracy" in v:
            lines.append(f"{group}: test accuracy {_fmt(v['test_accuracy'], True)} (chance {_fmt(v.get('chance'), True)})")
        elif "zero_shot_auc" in v:
            lines.append(f"{group}: zero-shot mean AUC {_fmt(v['zero_shot_auc'])} (test split)")
        elif group.startswith("pure "):
            best = max(v, key=lambda k: v[k]) if v else None
            if best:
                lines.append(f"PURE {group[5:]}: relevances of {best} agree best with "
                             f"{reference or 'the reference embedding'} (distance corr {_fmt(v[best])})")
        else:
            parts = [f"{k[:-4]} IoU {_fmt(x)}" + (f" (beam {_fmt(v[k[:-4] + '_beam_iou'])})" if k[:-4] + "_beam_iou" in v
                                                 else "")
                     for k, x in v.items() if k.endswith("_iou") and not k.endswith("_beam_iou")]
            parts += [f"LE({k[3:-9]}) val corr {_fmt(x)}" for k, x in v.items() if k.endswith("_val_corr")]
            lines.append(f"{group}: " + ", ".join(parts))
    return lines


def headlines(config: dict, workdir: str | Path = ".") -> list[str]:
    """The headline numbers of the run in `workdir`, as lines of text."""
    return headline_lines(headline_values(config, workdir), (config.get("pure") or {}).get("reference"))


def where(config: dict, workdir: str | Path = ".") -> list[tuple[str, str]]:
    """(what, path or command) for the unit pages of each layer, the MLflow store and the report."""
    from nexplain.config import mlflow_settings  # here: the headlines job needs neither (nor torch)
    from nexplain.tracking.tracking import tracking_uri

    root = Path(workdir) / config["results"]
    out = []
    for index in sorted(root.glob("*/*/*/report/pages/index.html")):
        out.append((f"unit pages, {index.parents[2].relative_to(root)}", str(index.relative_to(workdir))))
    settings = mlflow_settings(config)
    if settings["enabled"]:
        uri = tracking_uri(settings, workdir)
        out.append(("MLflow runs", f"mlflow ui --backend-store-uri {uri}"))
    out.append(("Snakemake report (every figure with its caption)", "snakemake --report report.html"))
    return out


def summary(config: dict, workdir: str | Path = ".") -> str:
    """The text printed at the end of a successful run."""
    lines = ["", "nexplain: results"]
    lines += [f"  {h}" for h in headlines(config, workdir)]
    places = where(config, workdir)
    if places:
        lines.append("open them:")
        width = max(len(w) for w, _ in places)
        lines += [f"  {w:<{width}}  {p}" for w, p in places]
        lines.append("  (a unit page opens in any browser: file://<this folder>/<path>, or "
                     f"python -m http.server -d {config['results']} and http://127.0.0.1:8000/)")
    return "\n".join(lines) + "\n"
