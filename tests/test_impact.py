"""Top Impact and the area chart."""

import numpy as np
import pytest
import torch
import torchvision

from nexplain.activations.hooks import Trace
from nexplain.linear.ablation import Ablation
from nexplain.linear.impact import BETAS, area_chart, impacts, top_impact
from nexplain.linear.tail import Tail
from test_ablation import brute_losses


def test_impacts_match_brute_force_and_ti_is_monotone():
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=4).eval().double()
    x, y = torch.randn(16, 3, 64, 64, dtype=torch.float64), torch.randint(0, 4, (16,))
    with torch.no_grad(), Trace(model, "layer3") as t:
        logits = model(x)
    ab = Ablation(Tail(model, "layer3"), t.output.numpy(), y.numpy())
    I = impacts(ab)
    base = torch.nn.functional.cross_entropy(logits / 1.1, y, reduction="none")
    right = (logits.argmax(1) == y).double()
    for u in (0, 5):
        lz = brute_losses(model, "layer3", x, y, u, np.zeros(16))
        def hook(m, i, o):
            o = o.clone()
            o[:, u] = 0
            return o
        h = model.layer3.register_forward_hook(hook)
        with torch.no_grad():
            right_k = (model(x).argmax(1) == y).double()
        h.remove()
        d_acc = (right - right_k) / max(right.sum(), 1)
        d_loss = (base - lz) / base.sum()
        np.testing.assert_allclose(I[u], ((d_acc - d_loss) / 2).numpy(), atol=1e-6)
    q = t.output.mean(dim=(2, 3)).numpy()
    ti = top_impact(I, q, BETAS + (1.0,))
    live = ~np.isnan(ti[:, 0])
    assert live.sum() > 200
    assert np.allclose(ti[live, -1], 1.0)
    assert (np.diff(ti[live], axis=1) >= -1e-12).all()


def test_top_impact_by_hand_and_dead_unit():
    q = np.array([[3.0, 1], [2, 1], [1, 1], [0, 1]])
    I = np.array([[0.5, -0.25, 0.25, 0.0], [0, 0, 0, 0]])
    ti = top_impact(I, q, (0.25, 0.5, 1.0))
    assert ti[0] == pytest.approx([0.5, 0.75, 1.0])
    assert np.isnan(ti[1]).all()  # zeroing it changes nothing


def test_area_chart_by_hand():
    q = np.array([[0.0], [1.0], [7.9], [8.0]])
    P = np.array([[1, 0], [1, 1], [0, 1], [0.9, 0.2]])
    df = area_chart(q, P, ["a", "b"])
    assert len(df) == 8 and df["n_inputs"].tolist() == [2, 0, 0, 0, 0, 0, 0, 2]
    first, last = df.iloc[0], df.iloc[7]
    assert (first["a"], first["b"]) == (1.0, 0.5) and (last["a"], last["b"]) == (0.5, 0.5)
    assert np.isnan(df.iloc[3]["a"])
