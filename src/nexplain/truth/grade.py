"""Grades of every method's explanation of every planted unit, against the planted truth, on test.

Per (variant, method, unit):
- `recovered`: formula methods, the explanation's cells equal the planted function's on every
  test image (logical equivalence on the masks; Clustered CoEx: any of its ranges; a graded
  unit: NetDissect and CoEx against its top level, which is all a top-quantile region can
  see); LE and PURE, the explanation names exactly the planted concepts;
- `set_precision`, `set_recall`, `set_f1`: the explanation's concepts against the planted ones;
- `mask_iou`: formula methods, IoU of the explanation's cells with the planted cells on test;
- `range_recovery`: Clustered CoEx on a graded unit, the share of levels whose range (the one
  holding the unit's median activation on that level's cells) is explained by the level's formula;
- `ari`: PURE on a polysemantic unit, adjusted Rand index of its circuits against the parts;
- the NeuronEval metrics (`nexplain.truth.neuroneval`) of the predicted concept activation
  (`nexplain.truth.predict`) against the planted function's image mean;
- `seconds`: the method's time for the unit.
The constant explanation (every image alike) is a row of its own, variant "constant".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nexplain.compositional.bitmaps import upsample
from nexplain.linear.simulate import Simulator
from nexplain.truth import neuroneval, predict
from nexplain.truth.planted import Planted, formula_cells, formula_concepts, image_parts, planted_cells

FORMULA_METHODS = ("netdissect", "coex", "clustered")
GRADES = ("recovered", "set_precision", "set_recall", "set_f1", "mask_iou", "range_recovery", "ari",
          *neuroneval.METRICS, "alpha", "base_rate", "seconds")


def set_scores(found: set, truth: set) -> tuple[float, float, float]:
    hit = len(found & truth)
    p = hit / len(found) if found else 0.0
    r = hit / len(truth) if truth else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return neuroneval.f1_iou(a, b)[1]


class UnitTruth:
    """One planted unit's truth on the store: cells, image means, test cells and the parts."""

    def __init__(self, p: Planted, store, names, test: np.ndarray):
        self.p, self.store, self.names, self.test = p, store, names, test
        self.cells = planted_cells(p, store, names)
        self.image = self.cells.mean((1, 2), dtype=np.float64)
        self.on = self.cells[test] > 0
        self.concepts = p.concepts(names)
        self.parts = image_parts(p, store, names) if p.kind == "polysemantic" else None
        self._cells: dict[str, np.ndarray] = {}

    def test_cells(self, text) -> np.ndarray:
        """Bool (test images, H, W): where a formula holds (nowhere for None); cached by text."""
        if not text:
            return np.zeros_like(self.on)
        if text not in self._cells:
            self._cells[text] = formula_cells(text, self.store, self.names)[self.test]
        return self._cells[text]

    def target(self, method: str) -> tuple[np.ndarray, set]:
        """The test cells and concepts a formula method must reproduce: a graded unit's top level for
        NetDissect and CoEx (all a top-quantile region sees), else the whole function."""
        if self.p.kind == "graded" and method != "clustered":
            top = max(self.p.levels, key=lambda x: x[1])[0]
            return self.test_cells(top), formula_concepts(top, self.names)
        return self.on, self.concepts


def _formula_grades(t: UnitTruth, method: str, rows: pd.DataFrame, unit_maps: np.ndarray | None) -> dict:
    ok = rows[(rows["status"] == "ok") & rows["formula"].notna()]
    found = set().union(*[formula_concepts(f, t.names) for f in ok["formula"]])
    target, concepts = t.target(method)
    cells = [t.test_cells(f) for f in ok["formula"]]
    out = {"explanation": " | ".join(ok["formula"]) if len(ok) else None}
    if t.p.kind != "linear":  # no formula is a weighted sum
        out["recovered"] = float(any(np.array_equal(c, target) for c in cells))
    out["mask_iou"] = max((_iou(c, target) for c in cells), default=0.0)
    if method == "clustered":
        pred = predict.ranges_activation(rows.to_dict("records"), t.store, t.names)
        if t.p.kind == "graded" and unit_maps is not None:  # graded by level, not by the union of levels
            out["range_recovery"], out["mask_iou"] = _range_recovery(t, ok, unit_maps)
            out["recovered"] = float(out["range_recovery"] == 1.0)
    else:
        pred = predict.formula_share(ok["formula"].iloc[0] if len(ok) else None, t.store, t.names)
    return {**out, **dict(zip(("set_precision", "set_recall", "set_f1"), set_scores(found, concepts)))}, pred


def _range_recovery(t: UnitTruth, ok: pd.DataFrame, unit_maps: np.ndarray) -> tuple[float, float]:
    """(share of levels whose range is explained by the level's formula, mean IoU of the two) over the
    levels present on test; a level's range is the one holding the unit's median on the test cells
    where that level is the planted value."""
    acts = upsample(unit_maps[t.test], t.store.shape)
    hits, ious = [], []
    for f, level in t.p.levels:
        mask = t.cells[t.test] == np.float32(level)
        if not mask.any():
            continue
        v = float(np.median(acts[mask]))
        r = ok[(ok["lo"] <= v) & (v <= ok["hi"])]
        cells = t.test_cells(r["formula"].iloc[0] if len(r) else None)
        hits.append(np.array_equal(cells, t.test_cells(f)))
        ious.append(_iou(cells, t.test_cells(f)))
    return (float(np.mean(hits)), float(np.mean(ious))) if hits else (np.nan, np.nan)


def grade_unit(t: UnitTruth, method: str, rows: pd.DataFrame, splits: dict, matrices: dict,
               unit_maps: np.ndarray | None = None) -> dict:
    """One row of grades (GRADES, NaN where a grade does not apply) for one method's explanation."""
    out = dict.fromkeys(GRADES, np.nan)
    if method in FORMULA_METHODS:
        g, pred = _formula_grades(t, method, rows, unit_maps)
    elif method.startswith("le_"):
        P, names = matrices[method[3:]]
        row = rows.iloc[0]
        found = set(row["concepts"])
        pred = Simulator(P, names).simulate(zip(row["weights"], row["concepts"]), row["bias"])
        g = {"explanation": " + ".join(f"{w:.2f} {c}" for c, w in zip(row["concepts"], row["weights"])),
             "recovered": float(found == t.concepts)}
        g.update(zip(("set_precision", "set_recall", "set_f1"), set_scores(found, t.concepts)))
    elif method == "pure":
        P, names = matrices["label"]
        found = set(rows["concept"].dropna())
        pred = predict.presence_any(found, P, names)
        g = {"explanation": " / ".join(sorted(found)), "recovered": float(found == t.concepts)}
        g.update(zip(("set_precision", "set_recall", "set_f1"), set_scores(found, t.concepts)))
        if t.parts is not None:
            g["ari"] = adjusted_rand(rows, t.parts)
    elif method == "constant":
        pred, g = np.ones(t.store.n_images), {"explanation": "(constant)", "recovered": 0.0}
        g.update(zip(("set_precision", "set_recall", "set_f1"), set_scores(set(), t.concepts)))
    else:
        raise ValueError(f"unknown method {method!r}")
    out.update(g)
    out.update(neuroneval.scores(pred, t.image, splits, on=t.image > 0))
    return out


def adjusted_rand(rows: pd.DataFrame, parts: np.ndarray) -> float:
    """ARI of one unit's circuits (rows of image_id, cluster) against the planted part of each image,
    over its top images that hold a part; NaN where either side has fewer than two groups (a dead
    unit's one circuit would otherwise agree perfectly with top images of one part)."""
    from sklearn.metrics import adjusted_rand_score

    truth = parts[rows["image_id"].to_numpy()]
    keep = truth >= 0
    truth, found = truth[keep], rows["cluster"].to_numpy()[keep]
    if len(np.unique(truth)) < 2 or len(np.unique(found)) < 2:
        return np.nan
    return float(adjusted_rand_score(truth, found))


def planting_check(t: UnitTruth, unit_maps: np.ndarray) -> dict:
    """Did the planting work, on test: Pearson of the unit's map with the planted function at the
    layer's resolution; IoU of its top cells (upsampled, as many as the planted cells) with them."""
    maps = unit_maps[t.test].astype(np.float64)
    n, h, w = maps.shape
    H, W = t.store.shape
    import torch
    import torch.nn.functional as F

    target = F.adaptive_avg_pool2d(torch.from_numpy(t.cells[t.test])[:, None], (h, w))[:, 0].numpy()
    corr = neuroneval.pearson(maps.ravel(), target.ravel())
    up = upsample(maps, (H, W))
    k = int(t.on.sum())
    if k == 0 or up.max() == up.min():
        top_iou = 0.0
    else:
        tau = np.partition(up.ravel(), up.size - k)[up.size - k]
        top_iou = _iou(up >= tau, t.on)
    return {"layer": t.p.layer, "unit": t.p.unit, "kind": t.p.kind, "corr": corr, "top_iou": top_iou,
            "passed": bool(corr >= 0.9 or top_iou >= 0.8)}


def summarise(grades: pd.DataFrame) -> pd.DataFrame:
    """Means per (variant, method, kind), and per (variant, method) over every kind ("all")."""
    cols = [g for g in GRADES if g not in ("alpha", "base_rate")]
    by_kind = grades.groupby(["variant", "method", "kind"], sort=False)[cols].mean().reset_index()
    overall = grades.groupby(["variant", "method"], sort=False)[cols].mean().reset_index().assign(kind="all")
    n = grades.groupby(["variant", "method", "kind"], sort=False).size().rename("units").reset_index()
    out = pd.concat([by_kind.merge(n), overall.assign(units=grades.groupby(["variant", "method"], sort=False)
                                                       .size().to_numpy())], ignore_index=True)
    return out[["variant", "method", "kind", "units", *cols]]
