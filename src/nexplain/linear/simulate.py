"""Simulation scoring (docs/methods.md): predict a unit from its explanation, then compare.

An explanation is `terms` [(weight, term)] plus a bias, a term being a concept name or a
formula string (`nexplain.compositional.formulas`). A simulator is a concept matrix P_sim; a formula
is simulated with fuzzy logic on it (OR = max, AND = min, AND NOT = min(a, 1 - b)), so
NetDissect labels, CoEx formulas and each Clustered CoEx range are explanations of length
1 with weight 1.

- correlation score: Pearson correlation of s(x) and the unit's activation q on test;
- ablation score: 1 - sum |L(f_{k <- c s + d}) - L(f)| / sum |L(f_{k <- mean}) - L(f)|
  with cross-entropy at temperature 1.1, (c, d) from val by "norm" (least squares: c =
  rho std(q) / std(s)) or "optim" (Adam on the val ablation score, lr 1e-2, 100 steps from
  c = 1, d = 0). A unit's "activation" is its spatial mean; replacing it by v sets its
  whole map to v, so on a linear tail (avgpool -> fc) it is exactly replacing the pooled
  value, the setting of the paper.
"""

from __future__ import annotations

import numpy as np

from nexplain.compositional.formulas import AND, OR, parse
from nexplain.errors import DataError

SCALINGS = ("optim", "norm")


# --- simulating an explanation ---------------------------------------------------------

class Simulator:
    """P_sim (N, C) with concept names: the value of any term on every image."""

    def __init__(self, P: np.ndarray, names: list[str]):
        self.P = np.asarray(P, np.float64)
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}

    def term(self, term: str) -> np.ndarray:
        if term in self.index:
            return self.P[:, self.index[term]]
        try:
            f = parse(term, self.names)
        except (ValueError, KeyError) as e:
            raise DataError(f"explanation term {term!r} is neither a concept of the simulator nor a "
                            f"formula over its {len(self.names)} concepts: {e}") from None
        out = self.P[:, f.leaves[0]]
        for op, c in zip(f.ops, f.leaves[1:]):
            x = self.P[:, c]
            out = np.maximum(out, x) if op == OR else np.minimum(out, x) if op == AND else np.minimum(out, 1 - x)
        return out

    def simulate(self, terms, bias: float = 0.0) -> np.ndarray:
        s = np.full(len(self.P), float(bias))
        for w, t in terms:
            s += float(w) * self.term(t)
        return s


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation; NaN when either side is constant (a dead unit or an empty simulation)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def norm_scaling(s_val: np.ndarray, q_val: np.ndarray) -> tuple[float, float]:
    """c = rho std(q)/std(s), d = mean(q) - c mean(s) on val (least squares of q on s)."""
    rho = pearson(s_val, q_val)
    sd = np.std(s_val)
    c = 0.0 if not sd > 0 or np.isnan(rho) else rho * np.std(q_val) / sd
    return float(c), float(np.mean(q_val) - c * np.mean(s_val))
