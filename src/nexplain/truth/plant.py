"""The auxiliary loss that plants functions into chosen channels while the network learns its classes.

Each planted channel is pulled towards its planted function, area-averaged from the
concept-mask grid to the layer's own resolution, by the correlation between the two. The pull
acts before the layer's last ReLU (`PreActivation`), through a leaky rectifier: on the ReLU's
output, a channel pushed below zero everywhere gets no gradient again and stays dead. The targets ride
through the same flip, shift and downscale as the images, so they stay on the pixels they
describe at every training size.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nexplain.activations.hooks import get_layer


@dataclass
class Planting:
    targets: torch.Tensor                    # uint8 (N, K, H, W): planted functions x 255, by image id
    channels: dict[str, list[tuple[int, int]]]  # layer -> [(target index k, channel)]
    weight: float = 1.0                      # beside the class loss (cross-entropy)

    @property
    def layers(self) -> list[str]:
        return list(self.channels)

    def batch(self, image_ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Float (B, K, *size) targets of these images at the images' size (0-255, like the pixels)."""
        return F.interpolate(self.targets[image_ids].float(), size=size, mode="nearest")

    def loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """`weight` x the sum over planted channels of 1 - the Pearson correlation, over the batch's
        cells, between the channel (leaky-rectified: a channel below zero still learns) and its
        target pooled to the layer's resolution. Bounded, and blind to the channel's scale and
        offset, so sparse and dense targets pull alike and none can blow up; a channel whose
        target is constant over the batch sits this batch out."""
        total = 0.0
        for layer, pairs in self.channels.items():
            a = outputs[layer]
            ks, chs = [k for k, _ in pairs], [c for _, c in pairs]
            t = F.adaptive_avg_pool2d(targets[:, ks], a.shape[-2:]).transpose(0, 1).flatten(1)  # (K, cells)
            x = F.leaky_relu(a[:, chs], 0.1).transpose(0, 1).flatten(1)
            x, t = x - x.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
            corr = (x * t).sum(1) / (x.norm(dim=1) * t.norm(dim=1) + 1e-8)
            total = total + ((1 - corr) * (t.norm(dim=1) > 0)).sum()
        return self.weight * total


class PreActivation(contextlib.AbstractContextManager):
    """The input of each layer's last ReLU, `pre[layer]`, during one forward pass: a ResNet stage's
    last block applies its `relu` last (to the sum with the shortcut). Layers without one give their
    output instead. Hooks are removed on exit."""

    def __init__(self, model: torch.nn.Module, layers):
        self.pre, self._handles = {}, []
        for name in layers:
            module = get_layer(model, name)
            block = module[-1] if isinstance(module, torch.nn.Sequential) and len(module) else module
            relu = getattr(block, "relu", None)
            if isinstance(relu, torch.nn.ReLU):  # called several times: the last call's input is kept
                hook = relu.register_forward_pre_hook(lambda m, inputs, name=name: self.pre.__setitem__(name, inputs[0].clone()))
            else:
                hook = module.register_forward_hook(lambda m, inputs, out, name=name: self.pre.__setitem__(name, out))
            self._handles.append(hook)

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        return False
