"""NeuronEval's passing metrics for a natural model's explanations, every unit and method: how well
each explanation's predicted concept activation (`nexplain.truth.predict`) tracks the unit's own
image-level activation on test, alpha tuned on val (`nexplain.truth.neuroneval`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nexplain.linear.simulate import Simulator
from nexplain.truth import neuroneval, predict


def unit_scores(formulas: dict[str, pd.DataFrame], linear: dict[str, pd.DataFrame], ids: np.ndarray,
                Q: np.ndarray, splits: dict[str, np.ndarray], store=None, names=None,
                matrices: dict | None = None) -> pd.DataFrame:
    """One row per (method, unit) with an explanation: method, unit, then NeuronEval's metrics.
    `Q` (N, U) image-level activations of images `ids`; `store`/`names` the concept masks the
    formulas were found on (indexed by image id); `matrices[source]` = (P aligned with ids, names)."""
    rows = []
    for method, t in formulas.items():
        for unit, g in t[t["status"] == "ok"].groupby("unit", sort=True):
            if method == "clustered":
                pred = predict.ranges_activation(g.to_dict("records"), store, names)
            else:
                pred = predict.formula_share(g["formula"].iloc[0], store, names)
            rows.append({"method": method, "unit": int(unit), **neuroneval.scores(pred[ids], Q[:, unit], splits)})
    for method, t in linear.items():
        P, p_names = matrices[method.removeprefix("le_")]
        for r in t[~t["dead"] & (t["length"] > 0)].itertuples():
            pred = Simulator(P, p_names).simulate(zip(r.weights, r.concepts), r.bias)
            rows.append({"method": method, "unit": int(r.unit), **neuroneval.scores(pred, Q[:, r.unit], splits)})
    return pd.DataFrame(rows, columns=["method", "unit", *neuroneval.METRICS, "alpha", "base_rate"])
