"""Scores of every explainer: rows from each table kind, correlation and ablation per row."""

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision

from nexplain.activations.hooks import Trace
from nexplain.linear.ablation import Ablation
from nexplain.linear.scoring import explanation_rows, score_rows, summary
from nexplain.linear.simulate import Simulator
from nexplain.linear.tail import Tail
from nexplain.splits import make_splits, split_masks


def test_rows_and_scores():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.randn(60, 3, 32, 32)
    with torch.no_grad(), Trace(model, "layer4") as t:
        model(x)
    q = t.output.mean(dim=(2, 3)).numpy().astype(np.float64)
    rng = np.random.default_rng(0)
    P = rng.random((60, 3))
    P[:, 0] = (q[:, 1] - q[:, 1].min()) / np.ptp(q[:, 1])     # concept "a" is exactly unit 1
    sim = Simulator(P, ["a", "b", "c"])
    le = pd.DataFrame({"unit": [1, 2], "concepts": [["a"], []], "weights": [[2.0], []], "bias": [0.1, 0.0],
                       "dead": [False, True]})
    nd = pd.DataFrame({"unit": [1, 2], "cluster": [0, 0], "status": ["ok", "ok"], "formula": ["a", "b OR c"]})
    rows = pd.concat([explanation_rows("le_label", le), explanation_rows("netdissect", nd)], ignore_index=True)
    assert rows["terms"].tolist() == [[(2.0, "a")], [], [(1.0, "a")], [(1.0, "b OR c")]]
    masks = split_masks(make_splits(np.arange(60), seed=0), np.arange(60))
    y = np.zeros(60, np.int64)
    ab = {k: Ablation(Tail(model, "layer4"), q[masks[k]], y[masks[k]]) for k in ("val", "test")}
    out = score_rows(rows, sim, q, masks, ab, ("norm",))
    assert out.loc[0, "corr_test"] == pytest.approx(1.0) and out.loc[2, "corr_test"] == pytest.approx(1.0)
    assert out.loc[0, "ablation_norm"] == pytest.approx(1.0, abs=1e-9)   # a perfect simulation
    assert np.isnan(out.loc[1, "corr_test"]) and np.isnan(out.loc[1, "ablation_norm"])  # dead unit
    own = Ablation(Tail(model, "layer4"), q, None)  # no labels: the model's own predictions
    assert torch.equal(own.y, own.logits.argmax(1)) and own.base.shape == (60,)
    s = summary(out)
    assert s["le_label"]["rows"] == 2 and s["le_label"]["scored"] == 1
