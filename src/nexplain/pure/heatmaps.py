"""Pixel heatmaps of a PURE circuit: Gradient x Input of a unit's seed, with the gradient let
through only the circuit's channels of an earlier layer (docs/methods.md, PURE).

The forward pass is the model's own; at the earlier layer the output is rewritten as
a * m + (a * (1 - m)).detach(), the same values, so the backward pass reaches the pixels only
through the channels m keeps. Summed over colour, x * dz/dx says where in the image the
circuit carries the unit's activation z = 1/2 ||relu(A_k(x))||^2.
"""

from __future__ import annotations

import numpy as np
import torch

from nexplain.activations.hooks import Trace, get_layer

CHANNELS = 10  # channels of a circuit: the largest mean relevances over its images


def circuit_channels(R: np.ndarray, n: int = CHANNELS) -> np.ndarray:
    """The `n` channels with the largest mean relevance over a circuit's rows of R (M, C),
    largest first (ties: the lower channel)."""
    mean = np.asarray(R, np.float64).mean(0)
    return np.lexsort((np.arange(len(mean)), -mean))[:min(n, len(mean))]


def circuit_heatmaps(model: torch.nn.Module, x: torch.Tensor, unit: int, layer: str, earlier: str,
                     channels) -> np.ndarray:
    """(n, H, W) float32 Gradient x Input of unit `unit` of `layer` for images x (n, 3, H, W),
    through `channels` of `earlier` only; zeros where the unit is silent."""
    def through_circuit(module, inputs, out):
        m = torch.zeros(out.shape[1], dtype=out.dtype, device=out.device)
        m[torch.as_tensor(np.asarray(channels), dtype=torch.long)] = 1
        m = m.view(1, -1, *([1] * (out.ndim - 2)))
        return out * m + (out * (1 - m)).detach()

    model.eval()
    x = x.detach().clone().requires_grad_(True)
    handle = get_layer(model, earlier).register_forward_hook(through_circuit)
    try:
        with Trace(model, layer, stop=True) as t:
            model(x)
        seed = 0.5 * t.output[:, unit].clamp_min(0).pow(2).sum()
        if not seed.requires_grad:
            return np.zeros((len(x), *x.shape[2:]), np.float32)
        (grad,) = torch.autograd.grad(seed, x)
    finally:
        handle.remove()
    return (x * grad).sum(1).detach().cpu().numpy().astype(np.float32)
