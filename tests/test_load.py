import time

import numpy as np
import open_clip
import pytest
import torch
import torchvision
from PIL import Image

from clip_fixture import register_tiny_clip
from nexplain.errors import ConfigError, ModelError
from nexplain.models.load import load_clip, load_model
from nexplain.models.manifest import resolve_spec
from nexplain.models.train import save_checkpoint

INPUT = {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return register_tiny_clip(tmp_path_factory.mktemp("clip"), "nexplain-tiny-vit")


def image(size=40):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def checkpoint_spec(path, num_classes=5):
    return {"source": "checkpoint", "arch": "resnet18", "num_classes": num_classes,
            "path": str(path), "input": INPUT}


def test_torchvision_random_init():
    m = load_model({"source": "torchvision", "arch": "resnet18", "weights": None,
                    "num_classes": 7, "input": INPUT})
    assert not m.module.training
    assert m.transform(image()).shape == (3, 32, 32)
    assert m.meta["num_classes"] == 7 and m.meta["input_size"] == 32
    assert m.module(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5).eval()
    save_checkpoint(net, tmp_path / "plain.pt")
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    x = torch.randn(2, 3, 32, 32)
    for name in ("plain.pt", "wrapped.pt"):
        m = load_model(checkpoint_spec(tmp_path / name))
        assert torch.equal(m.module(x), net(x))
    t = m.transform(image(40))
    expected = (torch.from_numpy(np.array(image(40).resize((32, 32), Image.BILINEAR))).permute(2, 0, 1) / 255 - 0.5) / 0.25
    assert t.shape == (3, 32, 32) and torch.allclose(t, expected, atol=0.05)


def test_trained_model_loads_through_its_resolved_spec(tmp_path):
    net = torchvision.models.resnet18(num_classes=4).eval()
    save_checkpoint(net, tmp_path / "model.pt")
    (tmp_path / "metrics.json").write_text('{"num_classes": 4}')
    config_entry = {"source": "train", "arch": "resnet18", "input": INPUT, "train": {}}
    # the model rule's path: the config entry resolves to a checkpoint spec
    spec = resolve_spec(config_entry, tmp_path / "model.pt", tmp_path / "metrics.json")
    m = load_model(spec)
    assert m.meta["num_classes"] == 4
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(m.module(x), net(x))


def test_checkpoint_key_mismatch_names_keys(tmp_path):
    state = torchvision.models.resnet18(num_classes=10).state_dict()
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ModelError) as err:
        load_model(checkpoint_spec(tmp_path / "bad.pt", num_classes=5))
    msg = str(err.value)
    assert "bad.pt" in msg
    assert "layer1.0.conv1.weight" in msg and "extra.weight" in msg and "fc.weight" in msg
    assert len(msg) < 1000


def test_checkpoint_missing_file(tmp_path):
    with pytest.raises(ModelError, match="nowhere.pt"):
        load_model(checkpoint_spec(tmp_path / "nowhere.pt"))


def test_corrupt_checkpoint_names_file_in_one_line(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(ModelError, match="cannot read checkpoint .*broken.pt") as e:
        load_model(checkpoint_spec(path))
    assert "\n" not in str(e.value)


def test_checkpoint_errors_name_the_cause_not_torch_advice(tmp_path):
    net = torchvision.models.resnet18(num_classes=5)
    save_checkpoint(net, tmp_path / "good.pt")
    good = (tmp_path / "good.pt").read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF  # inside the weights: torch.load alone would not notice
    cases = {"random.pt": (np.random.default_rng(0).bytes(1000),
                           "not a weights-only torch file (corrupt, or it would unpickle code): Unsupported operand"),
             "empty.pt": (b"", "the file is empty"),
             "truncated.pt": (good[:len(good) // 2], "a truncated or corrupt zip archive"),
             "flipped.pt": (bytes(flipped), "a truncated or corrupt zip archive (Bad CRC-32 for file")}
    for name, (data, cause) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelError) as e:
            load_model(checkpoint_spec(tmp_path / name))
        assert str(e.value).startswith(f"cannot read checkpoint {tmp_path / name}: {cause}"), str(e.value)
        assert "\n" not in str(e.value) and "weights_only` set to `False" not in str(e.value)


class _Opens:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoint_never_runs_code(tmp_path):
    torch.save({"fc.weight": _Opens(tmp_path / "ran")}, tmp_path / "code.pt")
    with pytest.raises(ModelError, match=r"it would unpickle code\): Unsupported global: GLOBAL io.open"):
        load_model(checkpoint_spec(tmp_path / "code.pt"))
    assert not (tmp_path / "ran").exists()


def test_checkpoint_of_non_tensors(tmp_path):
    state = torchvision.models.resnet18(num_classes=5).state_dict()
    torch.save({**state, "fc.bias": [0.0] * 5}, tmp_path / "list.pt")
    with pytest.raises(ModelError, match="entry 'fc.bias' is a list, not a tensor"):
        load_model(checkpoint_spec(tmp_path / "list.pt"))


def test_open_clip_bad_weights_file(tiny_clip, tmp_path):
    """The world VLMs' path: a weights file handed to load_clip."""
    from safetensors.torch import save_file

    state = open_clip.create_model(tiny_clip).state_dict()
    path = tmp_path / "vlm.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = load_clip({"name": tiny_clip, "pretrained": None}, str(path))[0]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match=f"cannot read checkpoint {path}: Error while deserializing header"):
        load_clip({"name": tiny_clip, "pretrained": None}, str(path))
    save_file({k: v.contiguous() for k, v in state.items() if k != "logit_scale"}, str(path))
    with pytest.raises(ModelError, match=f"checkpoint {path} does not fit CLIP: 1 missing: logit_scale$"):
        load_clip({"name": tiny_clip, "pretrained": None}, str(path))
    path = tmp_path / "vlm.pt"
    torch.save({"logit_scale": _Opens(tmp_path / "ran")}, path)
    with pytest.raises(ModelError, match=f"cannot read checkpoint {path}: not a weights-only torch file"):
        load_clip({"name": tiny_clip, "pretrained": None}, str(path))
    assert not (tmp_path / "ran").exists()


def test_torchvision_weights_absent_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(ModelError) as err:
        load_model({"source": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1"})
    assert time.monotonic() - start < 5
    msg = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg and "TORCH_HOME" in msg


def test_torchvision_weights_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net = torchvision.models.resnet18().eval()  # stands in for the real ImageNet file
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(net.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    m = load_model({"source": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1"})
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(m.module(x), net(x)) and m.meta["num_classes"] == 1000
    with pytest.raises(ModelError, match="IMAGENET1K_V1"):
        load_model({"source": "torchvision", "arch": "resnet18", "weights": "NOPE"})


def test_open_clip_tiny_random(tiny_clip):
    m = load_model({"source": "open_clip", "name": tiny_clip, "pretrained": None})
    assert isinstance(m.module, open_clip.transformer.VisionTransformer)
    assert not m.module.training
    x = m.transform(image(48))
    assert x.shape == (3, 32, 32)
    assert m.module(x[None]).shape == (1, 32)


def test_open_clip_local_file(tiny_clip, tmp_path):
    torch.manual_seed(1)
    full = open_clip.create_model(tiny_clip)
    torch.save(full.state_dict(), tmp_path / "tiny.pt")
    m = load_model({"source": "open_clip", "name": tiny_clip, "pretrained": str(tmp_path / "tiny.pt")})
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(m.module(x), full.visual.eval()(x))


def test_open_clip_missing_weights_and_names():
    start = time.monotonic()
    with pytest.raises(ModelError) as err:  # the real ViT-B-32 is never downloaded
        load_model({"source": "open_clip", "name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"})
    assert "laion" in str(err.value) and "file path" in str(err.value)
    with pytest.raises(ModelError, match="ViT-B-32"):
        load_model({"source": "open_clip", "name": "ViT-B-33", "pretrained": None})
    with pytest.raises(ModelError, match="openai"):  # unknown tag lists the valid ones
        load_model({"source": "open_clip", "name": "ViT-B-32", "pretrained": "no-such-tag"})
    assert time.monotonic() - start < 10


def test_unknown_source():
    with pytest.raises(ConfigError, match="checkpoint, torchvision, open_clip"):
        load_model({"source": "onnx"})
