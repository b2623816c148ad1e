"""A small plain CNN image tower for the world's VLMs, registered with timm as `nexplain_world_cnn`.

open_clip builds it through a model config's `vision_cfg.timm_model_name`, like any timm tower.
Stages of conv-BN-ReLU blocks are separated by 2x2 max pooling; the global pool is a max by default.
Max pooling answers "is there a star anywhere", the question zero-shot presence asks, and it
makes the tower size-agnostic, so training can show it object crops as well as whole images
(`nexplain.vlm.crops`). On the world it learns shapes and textures far faster per second than
ModifiedResNet, and crops halve the time again (benchmarks/RESULTS.md, 2026-12-04).
"""

from __future__ import annotations

import torch
from torch import nn

POOLS = ("max", "avg", "")


def _block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class WorldCNN(nn.Module):
    """Stem convolution with `stem_stride`, then one stage per entry of `channels`."""

    def __init__(self, channels=(24, 48, 96, 192), depth: int = 1, stem_stride: int = 2,
                 num_classes: int = 0, global_pool: str = "max", in_chans: int = 3, **_ignored):
        super().__init__()
        layers, cin = [], in_chans
        for i, cout in enumerate(channels):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers += _block(cin, cout, stem_stride if i == 0 else 1)
            layers += [m for _ in range(depth - 1) for m in _block(cout, cout)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.num_features = cin
        self.default_cfg = self.pretrained_cfg = {"pool_size": None}  # what open_clip's adapter reads
        self.reset_classifier(num_classes, global_pool)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in POOLS:
                raise ValueError(f"nexplain_world_cnn global_pool {global_pool!r}: valid choices are {POOLS}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == "max":
            x = x.amax((-2, -1))
        elif self.global_pool == "avg":
            x = x.mean((-2, -1))
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def register() -> None:
    """Make `nexplain_world_cnn` known to timm (idempotent)."""
    import timm
    from timm.models import register_model

    if "nexplain_world_cnn" in timm.list_models("nexplain_*"):
        return

    @register_model
    def nexplain_world_cnn(pretrained: bool = False, **kwargs) -> WorldCNN:
        if pretrained:
            raise ValueError("nexplain_world_cnn has no pretrained weights: load a checkpoint through open_clip")
        return WorldCNN(**{k: v for k, v in kwargs.items() if not k.startswith("pretrained")})
