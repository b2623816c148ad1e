"""Ablation by tail replay against brute-force full forward passes with a replaced unit."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from nexplain.activations.hooks import Trace
from nexplain.linear.ablation import Ablation
from nexplain.linear.tail import Tail


@pytest.fixture(scope="module")
def setup():
    """Everything in float64, so tail replay and the full forward pass agree far below 1e-5."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval().double()
    x = torch.randn(12, 3, 64, 64, dtype=torch.float64)
    y = torch.randint(0, 5, (12,))
    return model, x, y


@pytest.fixture(scope="module")
def layer4(setup):
    """(Ablation on layer4's linear tail, layer4's maps)."""
    model, x, y = setup
    acts = acts_of(model, "layer4", x)
    return Ablation(Tail(model, "layer4"), acts.numpy(), y.numpy()), acts


def acts_of(model, layer, x):
    with torch.no_grad(), Trace(model, layer) as t:
        model(x)
    return t.output


def brute_losses(model, layer, x, y, unit, v):
    """Full forward with the unit's whole map set to v (one value per input)."""
    def hook(module, inputs, out):
        out = out.clone()
        out[:, unit] = torch.as_tensor(v, dtype=out.dtype)[:, None, None]
        return out
    handle = dict(model.named_modules())[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            return F.cross_entropy(model(x) / 1.1, y, reduction="none")
    finally:
        handle.remove()


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_ablation_score_equals_brute_force(setup, layer):
    model, x, y = setup
    acts = acts_of(model, layer, x)
    ab = Ablation(Tail(model, layer), acts.numpy(), y.numpy())
    assert ab.linear == (layer == "layer4")
    q = acts.mean(dim=(2, 3)).numpy()
    rng = np.random.default_rng(0)
    units = [0, 3, 7]
    V = q[:, units] + rng.normal(0, 0.3, (len(x), len(units)))
    V_mean = np.broadcast_to(q[:, units].mean(0), V.shape).copy()
    got = ab.score(units, V, V_mean)
    with torch.no_grad():
        base = F.cross_entropy(model(x) / 1.1, y, reduction="none")
    for j, u in enumerate(units):
        num = (brute_losses(model, layer, x, y, u, V[:, j]) - base).abs().sum()
        den = (brute_losses(model, layer, x, y, u, V_mean[:, j]) - base).abs().sum()
        assert got[j] == pytest.approx(float(1 - num / den), abs=1e-5)
    assert np.allclose(ab.score(units, V_mean, V_mean), 0.0)  # the mean scores 0


def test_perfect_simulator_and_optim_scaling(layer4):
    ab, acts = layer4
    q = acts.mean(dim=(2, 3)).numpy()
    units = np.arange(6)
    mean = np.broadcast_to(q[:, units].mean(0), (len(q), 6)).copy()
    assert np.allclose(ab.score(units, q[:, units], mean), 1.0)  # a perfect simulator scores 1
    # a simulation off by scale and shift: optim recovers most of what norm-free (1, 0) loses
    S = (q[:, units] - 0.4) / 3
    c, d = ab.optim_scaling(units, S, steps=300, lr=0.05)
    before = ab.score(units, S, mean)
    after = ab.score(units, S * c + d, mean)
    assert (after > before).all() and after.mean() > 0.8


def test_a_replayed_tail_shows_a_bar_over_its_units(setup, capsys):
    """Replaying the tail costs units x inputs passes: minutes on a real layer, so it shows progress."""
    model, x, y = setup
    acts = acts_of(model, "layer3", x).numpy()
    Ablation(Tail(model, "layer3"), acts, y.numpy(), progress=True).deviation([0, 1, 2], acts.mean((2, 3))[:, :3])
    assert "replay after layer3" in capsys.readouterr().err
    Ablation(Tail(model, "layer3"), acts, y.numpy(), progress=False).deviation([0, 1, 2], acts.mean((2, 3))[:, :3])
    assert capsys.readouterr().err == ""


def test_closed_form_gradient_of_the_numerator_equals_autograd(layer4):
    """optim_scaling on a linear tail steps along a closed-form gradient; it must be autograd's."""
    ab, acts = layer4
    units = np.array([1, 4, 4, 9])  # a unit twice, as when explainers share it
    V = torch.as_tensor(acts.mean(dim=(2, 3)).numpy()[:, units] * 0.7 + 0.1).requires_grad_(True)
    (ab.losses(units, V) - ab.base).abs().sum().backward()
    got = ab._numerator_grad(units, V.detach())
    assert got.shape == V.shape
    assert torch.allclose(got, V.grad, rtol=1e-10, atol=1e-12)


def test_optim_scaling_of_a_unit_does_not_depend_on_the_units_beside_it(layer4):
    """Shards score subsets of a layer's rows: each row's (c, d) must be the bytes of the whole call."""
    ab, acts = layer4
    q = acts.mean(dim=(2, 3)).numpy()
    units = np.arange(40)
    S = q[:, units] * 0.5 + 0.2
    c_all, d_all = ab.optim_scaling(units, S, steps=20)
    c_some, d_some = ab.optim_scaling(units[3:5], S[:, 3:5], steps=20)
    assert c_some.tobytes() == c_all[3:5].tobytes() and d_some.tobytes() == d_all[3:5].tobytes()
