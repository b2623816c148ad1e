"""The planting loss: zero on the planted functions, gradients only into planted channels, targets
augmented with their images."""

import torch

from nexplain.models.train import augment
from nexplain.truth.plant import Planting


def test_loss_is_zero_on_the_pooled_targets_and_pulls_only_planted_channels():
    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(6, 2, 8, 8, generator=g) > 0.7).to(torch.uint8) * 255
    plant = Planting(targets, {"layer3": [(0, 5), (1, 2)]}, weight=3.0)
    t = plant.batch(torch.tensor([1, 4]), (16, 16)) / 255
    assert t.shape == (2, 2, 16, 16) and torch.equal(t[:, :, ::2, ::2], targets[[1, 4]].float() / 255)
    a = torch.zeros(2, 8, 4, 4)
    a[:, 5] = 2.0 * torch.nn.functional.adaptive_avg_pool2d(t[:, :1], (4, 4))[:, 0] + 0.5  # any scale, offset
    a[:, 2] = torch.nn.functional.adaptive_avg_pool2d(t[:, 1:], (4, 4))[:, 0]
    assert plant.loss({"layer3": a}, t).item() < 1e-5
    b = torch.randn(2, 8, 4, 4, generator=g) - 3.0  # below zero everywhere: still pulled (leaky)
    b.requires_grad_()
    loss = plant.loss({"layer3": b}, t)
    loss.backward()
    planted = torch.zeros(8, dtype=bool)
    planted[[5, 2]] = True
    assert 0 < loss.item() <= 3.0 * 2 * 2 and b.grad[:, ~planted].abs().sum() == 0
    assert b.grad[:, planted].abs().sum() > 0


def test_targets_ride_through_the_images_augmentation():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (5, 3, 32, 32), generator=g, dtype=torch.uint8)
    both = torch.cat([images.float(), images[:, :1].float()], 1)  # a target equal to the red channel
    out = augment(both, torch.Generator().manual_seed(2), 16)
    assert out.shape == (5, 4, 16, 16) and torch.allclose(out[:, 0], out[:, 3])
    plain = augment(images, torch.Generator().manual_seed(2), 16)  # same draws: same flips and shifts
    assert torch.allclose(plain, out[:, :3])
