"""Gradient x Activation relevances for PURE: equal to direct autograd, batched over pairs."""

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import rand_score

from nexplain.data.images import ImageTable, load_image
from nexplain.models.load import input_transform
from nexplain.pure.pure import circuits
from nexplain.pure.relevance import (image_loader, pair_relevances, relevance_table, relevances, top_images,
                                     top_pairs)


class Net(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.a = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        self.b = torch.nn.Sequential(torch.nn.Conv2d(4, 5, 3, padding=1), torch.nn.ReLU())
        self.c = torch.nn.Sequential(torch.nn.Conv2d(5, 6, 3, stride=2, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.c(self.b(self.a(x))).mean((2, 3)))


def _direct(net, x, unit, layer_names):
    """One (image, unit) at a time, by hand: z = 1/2 ||relu(A_k)||^2, R_i = sum A_i dz/dA_i."""
    acts = {}
    h = x[None]
    for name in ("a", "b", "c"):
        h = getattr(net, name)(h)
        acts[name] = h
    z = 0.5 * acts["c"][0, unit].clamp_min(0).pow(2).sum()
    grads = torch.autograd.grad(z, [acts[n] for n in layer_names])
    out = {}
    for n, g in zip(layer_names, grads):
        r = (acts[n] * g).sum((2, 3))[0]
        out[n] = (r / r.abs().sum()).detach().numpy()
    return out


def test_batched_pairs_equal_direct_autograd():
    net = Net().eval()
    x = torch.randn(6, 3, 8, 8)
    units = torch.tensor([0, 3, 5, 0, 1, 3])  # a mix of units and images in one batch
    got = pair_relevances(net, x, units, "c", ["a", "b"])
    for b in range(6):
        want = _direct(net, x[b], int(units[b]), ["a", "b"])
        for layer in ("a", "b"):
            assert np.allclose(got[layer][b].numpy(), want[layer], atol=1e-5)
            assert np.isclose(np.abs(got[layer][b].numpy()).sum(), 1.0)
    # the batch loop over pairs gives the same values in any batch size
    pairs = np.stack([units.numpy(), np.arange(6)], axis=1)
    rel = relevances(net, lambda ids: x[torch.as_tensor(ids)], pairs, "c", ["a", "b"], batch_size=4,
                     progress=False)
    assert np.allclose(rel["b"], got["b"].numpy(), atol=1e-6)


def test_a_silent_unit_has_zero_relevance():
    net = Net().eval()
    with torch.no_grad():
        net.c[0].bias[2] = -1e6  # unit 2 never fires
    rel = pair_relevances(net, torch.randn(3, 3, 8, 8), torch.tensor([2, 2, 2]), "c", ["a"])
    assert torch.equal(rel["a"], torch.zeros(3, 4))


def test_planted_polysemantic_unit_splits_into_its_two_circuits():
    """Unit 0 of layer `c` fires for red images through channel 0 of `a` and for blue images
    through channel 1: k = 2 on the `a` relevances recovers the two groups."""
    net = Net().eval()
    with torch.no_grad():
        for m in (net.a[0], net.b[0], net.c[0]):
            m.weight.zero_(), m.bias.zero_()
        net.a[0].weight[0, 0, 1, 1] = 1.0   # channel 0: red
        net.a[0].weight[1, 2, 1, 1] = 1.0   # channel 1: blue
        net.b[0].weight[0, 0, 1, 1] = 1.0
        net.b[0].weight[0, 1, 1, 1] = 1.0   # b0 = red + blue
        net.c[0].weight[0, 0, 1, 1] = 1.0   # unit 0 of c = b0
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 2, 40)
    x = torch.zeros(40, 3, 8, 8)
    for i, c in enumerate(colour):
        x[i, 0 if c == 0 else 2] = float(rng.uniform(0.5, 2.0))
    x += 0.01 * torch.rand(40, 3, 8, 8)
    rel = pair_relevances(net, x, torch.zeros(40, dtype=torch.long), "c", ["a"])["a"].numpy()
    labels = circuits(rel, k=2, seed=0)
    assert rand_score(colour, labels) >= 0.9


def test_top_images_rank_by_peak_then_id():
    ids = np.array([10, 11, 12, 13])
    peak = np.array([[1.0, 5.0], [3.0, 5.0], [3.0, 1.0], [0.0, 2.0]])
    assert top_images(ids, peak, 3).tolist() == [[11, 12, 10], [10, 11, 13]]
    assert top_images(ids, peak, 9).shape == (2, 4)


def test_top_pairs_list_each_unit_with_its_top_images():
    ids = np.array([10, 11, 12, 13])
    peak = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 2.0], [3.0, 1.0, 9.0], [0.0, 2.0, 1.0]])
    pairs = top_pairs(ids, peak, np.array([2, 0]), 2)
    assert pairs.dtype == np.int64
    assert pairs.tolist() == [[2, 12], [2, 11], [0, 11], [0, 12]]  # unit 0: a tie at 3.0, lower id first


def test_image_loader_gives_the_transformed_images_in_the_asked_order(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(paths[-1])
    table = ImageTable(tmp_path, paths, np.array([""] * 5))
    transform = input_transform({"size": 12, "mean": [0.5] * 3, "std": [0.25] * 3})
    threads = torch.get_num_threads()
    load = image_loader(table, transform, np.array([3, 1, 3, 4]))
    assert torch.get_num_threads() == threads
    got = load(np.array([4, 3, 3, 1]))
    want = torch.stack([transform(load_image(paths[i])) for i in (4, 3, 3, 1)])
    assert got.shape == (4, 3, 12, 12) and torch.equal(got, want)


def test_relevance_table_stacks_the_layers_with_nulls_past_their_channels():
    pairs = np.array([[7, 1], [7, 4]])
    rel = {"a": np.array([[0.25, 0.75], [1.0, 0.0]], np.float32), "b": np.full((2, 3), 0.5, np.float32)}
    t = relevance_table(pairs, rel, ["a", "b"])
    assert t.column_names == ["unit", "image_id", "layer", "c0000", "c0001", "c0002"]
    assert t.column("layer").to_pylist() == ["a", "a", "b", "b"]
    assert t.column("image_id").to_pylist() == [1, 4, 1, 4]
    assert t.column("c0000").to_pylist() == [0.25, 1.0, 0.5, 0.5]
    assert t.column("c0002").to_pylist() == [None, None, 0.5, 0.5]
