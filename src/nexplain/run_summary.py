"""What a finished run printed last: where its results are, its headline numbers, and the
commands that open them. Read from the artifacts only, so `nexplain summary` prints the same
thing later; a result that is not there (a target not run yet) is left out, not guessed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from nexplain.config import mlflow_settings

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


def headlines(config: dict, workdir: str | Path = ".") -> list[str]:
    """One line per headline number found: model accuracy, mean IoU per formula method and LE
    val correlation per layer, VLM zero-shot AUC, PURE's best layer."""
    root = Path(workdir) / config["results"]
    lines = []
    for name, spec in config.get("models", {}).items():
        m = _json(root / "models" / name / "metrics.json") if spec["source"] == "train" else None
        if m:
            lines.append(f"{name}: test accuracy {_fmt(m.get('test_accuracy'), True)} "
                         f"(chance {_fmt(m.get('chance'), True)})")
    targets = {(t["model"], t["dataset"], layer) for t in config.get("linear", {}).get("targets", [])
               for layer in t["layers"]}
    targets |= {(t["model"], t["dataset"], layer) for t in config.get("explain", {}).get("targets", [])
                for layer in t["layers"]}
    for model, dataset, layer in sorted(targets):
        base = root / model / dataset / layer
        scores = _json(base / "report" / "scores.json") or {}
        parts = [f"{m} IoU {_fmt(scores[f'metrics.{m}.iou'])}" for m in FORMULA_METHODS
                 if f"metrics.{m}.iou" in scores]
        for le in sorted((base / "explanations").glob("le_*.parquet")):
            corr = _le_val_corr(le)
            if corr is not None:
                parts.append(f"LE({le.stem[3:]}) val corr {_fmt(corr)}")
        if parts:
            lines.append(f"{model}/{dataset}/{layer}: " + ", ".join(parts))
    for name, spec in config.get("vlms", {}).items():
        z = _json(root / "vlms" / name / "zero_shot.json")
        if z:
            lines.append(f"{name}: zero-shot mean AUC {_fmt(z.get('mean_auc'))} (test split)")
    for t in config.get("pure", {}).get("targets", []):
        p = _json(root / t["model"] / t["dataset"] / t["layer"] / "pure" / "summary.json")
        if p and p.get("best_layer"):
            best = p["best_layer"]
            lines.append(f"PURE {t['model']}/{t['layer']}: relevances of {best} agree best with "
                         f"{config['pure'].get('reference')} (distance corr {_fmt(p.get(f'{best}.corr_mean'))})")
    return lines


def where(config: dict, workdir: str | Path = ".") -> list[tuple[str, str]]:
    """(what, path or command) for the unit pages of each layer, the MLflow store and the report."""
    from nexplain.tracking import tracking_uri

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
