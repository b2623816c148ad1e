"""Layer names without weights: the meta-device module has the names the jobs hook."""

import pytest
import torch
import torchvision

from nexplain.activations.hooks import list_layers
from nexplain.errors import ModelError
from nexplain.models.layers import skeleton, unknown_layer
from nexplain.models.load import load_model


def test_torchvision_skeleton_is_the_real_module_on_meta():
    meta = skeleton({"source": "train", "arch": "resnet18"})
    assert next(meta.parameters()).device.type == "meta"
    assert list_layers(meta) == list_layers(torchvision.models.resnet18(num_classes=7))
    assert skeleton({"source": "checkpoint", "arch": "resnet18"}) is meta  # cached per architecture


def test_regnet_builds_off_meta():
    # its widths are computed with tensors, which the meta device cannot read back
    assert "trunk_output.block4" in list_layers(skeleton({"source": "torchvision", "arch": "regnet_y_400mf"}))


@pytest.mark.parametrize("name", ["nexplain-world-cnn", "nexplain-world-vit"])
def test_open_clip_skeleton_is_the_loaded_visual_tower(name):
    spec = {"source": "open_clip", "name": name, "pretrained": None}
    assert list_layers(skeleton(spec)) == list_layers(load_model(spec).module)


def test_hub_names_are_known_only_from_their_files():
    assert skeleton({"source": "open_clip", "name": "hf-hub:org/model"}) is None


@pytest.mark.parametrize("spec, message", [
    ({"source": "train", "arch": "resnet181"},
     "unknown torchvision architecture 'resnet181'; 80 are known, e.g. resnet18"),
    ({"source": "open_clip", "name": "ViT-B-31"}, "unknown open_clip model 'ViT-B-31'"),
])
def test_unknown_architectures(spec, message):
    with pytest.raises(ModelError, match=message.replace("(", r"\(")):
        skeleton(spec)


def test_names_resolve_as_the_jobs_resolve_them():
    net = skeleton({"source": "train", "arch": "resnet18"})
    for ok in ("layer4", "layer4.1.conv2", "fc"):
        assert unknown_layer(net, ok) is None
    assert unknown_layer(net, "layer5") == (
        "unknown layer 'layer5' of ResNet; valid choices (top level): conv1, bn1, relu, maxpool, layer1, layer2, "
        "layer3, layer4, avgpool, fc; did you mean layer4, layer3, layer2?")
    assert "valid choices under 'layer4.1': layer4.1.conv1, layer4.1.bn1," in unknown_layer(net, "layer4.1.conv")
    assert "valid choices under 'layer4': layer4.{0..1};" in unknown_layer(net, "layer4.2.conv1")


def test_long_choice_lists_are_shortened():
    vit = skeleton({"source": "open_clip", "name": "ViT-B-32"})
    message = unknown_layer(vit, "transformer.resblocks.12")
    assert "valid choices under 'transformer.resblocks': transformer.resblocks.{0..11};" in message
    wide = torch.nn.ModuleDict({f"head_{c}": torch.nn.ReLU() for c in "abcdefghijklmnopqrstuvwxyz"})
    assert unknown_layer(wide, "tail").endswith("head_w, head_x, ... (26 in all)")


def test_a_tower_that_cannot_be_built_offline_is_a_model_error():
    with pytest.raises(ModelError, match="open_clip cannot build xlm-roberta-base-ViT-B-32: "):
        skeleton({"source": "open_clip", "name": "xlm-roberta-base-ViT-B-32"})
