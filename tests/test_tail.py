"""Tail replay: the network after a layer, as a function of the layer's output."""

import pytest
import torch
import torchvision
from torch import nn

from nexplain.activations.hooks import Trace
from nexplain.errors import ModelError
from nexplain.linear.tail import Tail


def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=7).eval()


@pytest.mark.parametrize("layer, linear", [("layer4", True), ("layer3", False), ("layer2.1", False)])
def test_tail_replays_the_rest_of_the_network(layer, linear):
    model, x = resnet(), torch.randn(3, 3, 64, 64)
    with torch.no_grad(), Trace(model, layer) as t:
        want = model(x)
        got = Tail(model, layer)(t.output)
    assert torch.allclose(got, want, atol=1e-5)
    tail = Tail(model, layer)
    assert (tail.linear is not None) == linear
    if linear:
        W, b = tail.linear
        assert torch.allclose(t.output.mean(dim=(2, 3)) @ W.T + b, want, atol=1e-5)


class Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(h) + h[:, :2]  # the output reads h around `b`


def test_tail_around_a_skip_is_refused():
    with pytest.raises(ModelError, match="from module 'a'"):
        Tail(Skip(), "b")
    model, x = Skip(), torch.randn(5, 4)
    assert torch.allclose(Tail(model, "a")(model.a(x)), model(x))  # before the skip: fine


def test_unknown_layer():
    with pytest.raises(ModelError, match="layer9"):
        Tail(resnet(), "layer9")
