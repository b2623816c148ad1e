"""PURE circuit heatmaps: Gradient x Input let through a circuit's channels only."""

import numpy as np
import torch
import torchvision

from nexplain.pure.heatmaps import circuit_channels, circuit_heatmaps


def _model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=3).eval().double()


def test_circuit_channels_are_the_largest_mean_relevances():
    R = np.array([[0.1, 0.5, 0.2, 0.5], [0.1, 0.3, 0.2, 0.3]])
    assert circuit_channels(R, 2).tolist() == [1, 3]  # a tie: the lower channel first
    assert circuit_channels(R, 10).tolist() == [1, 3, 2, 0]


def test_all_channels_give_plain_gradient_x_input_and_circuits_split_it():
    model = _model()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    every = circuit_heatmaps(model, x, unit=5, layer="layer3", earlier="layer2", channels=range(128))
    xg = x.clone().requires_grad_(True)
    acts = {}
    handle = model.layer3.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    model(xg)
    handle.remove()
    (g,) = torch.autograd.grad(0.5 * acts["a"][:, 5].clamp_min(0).pow(2).sum(), xg)
    assert every.shape == (2, 64, 64)
    np.testing.assert_allclose(every, (xg * g).sum(1).detach().numpy(), rtol=1e-6, atol=1e-10)
    # the gradient is linear in what passes: two disjoint circuits add up to all channels
    a = circuit_heatmaps(model, x, 5, "layer3", "layer2", range(0, 64))
    b = circuit_heatmaps(model, x, 5, "layer3", "layer2", range(64, 128))
    np.testing.assert_allclose(a + b, every, atol=1e-6)  # float32 heatmaps
    assert not np.allclose(a, 0) and not np.allclose(b, 0)
    assert np.allclose(circuit_heatmaps(model, x, 5, "layer3", "layer2", []), 0)  # nothing passes
