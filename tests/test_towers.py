"""An image tower's units ablated through its tail and a zero-shot class head (nexplain.linear.towers)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clip_fixture import register_tiny_clip
from nexplain.data.images import ImageTable, load_image
from nexplain.errors import DataError, ModelError
from nexplain.linear.ablation import Ablation
from nexplain.linear.tail import Tail
from nexplain.linear.towers import layer_tail

LAYER = "transformer.resblocks.1.mlp.gelu"  # the hidden layer of the last block's MLP


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    name = register_tiny_clip(tmp_path_factory.mktemp("clip"), "nexplain-tower-vit", vocab_size=49408)
    return {"source": "open_clip", "name": name, "pretrained": None}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root, rng = tmp_path_factory.mktemp("images"), np.random.default_rng(0)
    paths = []
    for i in range(6):
        paths.append(root / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(paths[-1])
    return ImageTable(root, paths, np.array(["test"] * 6), np.array([0, 1, 2, 0, 1, 2]), ["red", "green", "blue"])


def test_the_mlp_tail_reads_the_residual_stream_as_an_extra_input(spec):
    from nexplain.models.load import load_model

    visual, x = load_model(spec).module, torch.randn(2, 3, 32, 32)
    with pytest.raises(ModelError, match="also reads"):
        Tail(visual, LAYER)
    tail = Tail(visual, LAYER, extras=True)
    assert len(tail.extras) == 1 and tail.linear is None
    with torch.no_grad():
        acts, extras = tail.capture(x)
        assert acts.shape == (2, 17, 256)  # 16 patches + CLS, 4 x 64 hidden units
        assert torch.equal(tail(acts, *extras), visual(x))  # the replay is the tower itself


def test_tower_tail_gives_zero_shot_logits_and_ablation_replaces_every_token(spec, table):
    torch.manual_seed(0)
    tail, inputs = layer_tail(spec, LAYER, table)
    maps, extras = inputs(np.arange(6))
    assert maps.shape == (6, 256, 17, 1) and extras[0].shape == (6, 17, 64)
    x = torch.stack(_images(spec, table))
    with torch.no_grad():
        got = tail(torch.as_tensor(maps), *(torch.as_tensor(e) for e in extras))
        emb = tail.tail._full(x)
        want = tail.scale * F.normalize(emb, dim=-1) @ tail.text.T
    assert got.shape == (6, 3) and torch.allclose(got, want, atol=1e-5)
    ab = Ablation(tail, maps, table.labels, extras=extras, progress=False)
    assert torch.allclose(ab.logits, want.double() if ab.logits.dtype == torch.float64 else want, atol=1e-5)
    moved = ab.replaced_logits([3], torch.full((6, 1), 10.0))  # unit 3 set to 10 on every token
    assert moved.shape == (1, 6, 3)
    assert (moved - ab.logits).abs().max() > 1e-4  # the unit matters to the zero-shot head
    kept = ab.replaced_logits([3], torch.as_tensor(maps[:, 3, 5, 0])[:, None])  # one token's value everywhere
    assert not torch.allclose(kept, ab.logits[None])  # tokens differ, so this is not the identity


def test_a_tower_needs_class_names(spec, table):
    nameless = ImageTable(table.root, table.paths, table.splits, table.labels, None)
    with pytest.raises(DataError, match="no class names"):
        layer_tail(spec, LAYER, nameless)


def _images(spec, table):
    from nexplain.models.load import load_model

    preprocess = load_model(spec).transform
    return [preprocess(load_image(p)) for p in table.paths]
