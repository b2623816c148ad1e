"""The world CNN image tower: a timm model that open_clip builds, loads and runs at any input size."""

import open_clip
import pytest
import torch

from nexplain.models.clip import new_model, save_checkpoint
from nexplain.models.load import load_clip
from nexplain.models.world_cnn import WorldCNN


def test_open_clip_builds_it_as_a_timm_tower_with_max_pooling():
    model, preprocess = new_model("nexplain-world-cnn", 0)
    trunk = model.visual.trunk
    assert isinstance(trunk, WorldCNN) and trunk.global_pool == "max" and trunk.num_classes == 0
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        feats = trunk.forward_features(x)
        assert torch.equal(trunk(x), feats.amax((-2, -1)))
        assert model.encode_image(torch.randn(3, 3, 48, 48)).shape == (3, 128)  # crops pass too


def test_checkpoint_loads_through_the_pretrained_path_with_identical_embeddings(tmp_path):
    model, _ = new_model("nexplain-world-cnn", 1)
    model.eval()
    path = tmp_path / "open_clip_model.safetensors"
    save_checkpoint(model, path)
    loaded, _, tokenizer = load_clip({"name": "nexplain-world-cnn", "pretrained": str(path)})
    same, _, _ = open_clip.create_model_and_transforms("nexplain-world-cnn", pretrained=str(path))
    x, tok = torch.randn(4, 3, 112, 112), tokenizer(["red", "a striped star"])
    with torch.no_grad():
        for m in (loaded, same.eval()):
            assert torch.equal(m.encode_image(x), model.encode_image(x))
            assert torch.equal(m.encode_text(tok), model.encode_text(tok))


def test_bad_pool_and_pretrained_weights_are_clear_errors():
    with pytest.raises(ValueError, match="global_pool 'mean': valid choices"):
        WorldCNN(global_pool="mean")
    import timm

    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("nexplain_world_cnn", pretrained=True)
