"""An explanation's predicted concept activation per image: what NeuronEval's metrics compare
with the unit. One function per kind of explanation:

- a formula (NetDissect, CoEx): the share of the image's cells where it holds;
- Clustered CoEx's ranges: per cell the midpoint of the highest range whose formula holds,
  averaged over the image;
- LE: its weighted sum of the concept matrix's columns, plus the bias (`linear.simulate.Simulator`);
- PURE: 1 where any circuit's concept is present (label matrix >= 0.5).
"""

from __future__ import annotations

import numpy as np

from nexplain.compositional import formulas
from nexplain.compositional.masks import bitmap_andnot, bitmap_or


def formula_share(text: str | None, store, names) -> np.ndarray:
    """(N,) share of cells where the formula holds; zeros for no formula."""
    out = np.zeros(store.n_images)
    if text:
        b = formulas.evaluate(formulas.parse(text, names), store)
        out[b.ids] = b.per_image() / (store.shape[0] * store.shape[1])
    return out


def ranges_activation(rows, store, names) -> np.ndarray:
    """(N,) image means of the cell-wise midpoint of the highest range whose formula holds.
    `rows`: a unit's Clustered CoEx rows (lo, hi, formula, status)."""
    ok = [r for r in rows if r["status"] == "ok" and r["formula"]]
    out = np.zeros(store.n_images)
    covered = None
    for r in sorted(ok, key=lambda r: -r["lo"]):  # highest range first; lower ones fill what is left
        b = formulas.evaluate(formulas.parse(r["formula"], names), store)
        new = b if covered is None else bitmap_andnot(b, covered)
        out[new.ids] += 0.5 * (r["lo"] + r["hi"]) * new.per_image()
        covered = b if covered is None else bitmap_or(covered, b)
    return out / (store.shape[0] * store.shape[1])


def presence_any(concepts, P: np.ndarray, names, threshold: float = 0.5) -> np.ndarray:
    """(N,) 1.0 where any of the named concepts is present in the label matrix."""
    col = {n: j for j, n in enumerate(names)}
    idx = [col[c] for c in concepts if c in col]
    return (P[:, idx] >= threshold).any(1).astype(np.float64) if idx else np.zeros(len(P))
