"""Fuzzed inputs (issue 19): corrupt images, masks and checkpoints end in a defined result
or a one-line error naming the file, never a raw PIL/zlib/unpickling traceback or a
silently wrong number. Seeded; each test runs in a few seconds."""

import io

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from broden_fixture import SH, SW, write_broden_fixture
from nexplain.data.broden import open_broden
from nexplain.data.images import ImageDataset, ImageTable, load_image
from nexplain.errors import DataError, ModelError, one_line
from nexplain.models.load import input_transform, load_clip, load_model

pytestmark = pytest.mark.reliability

KINDS = ("truncate", "flip", "zero_run", "zeros", "empty", "random")
INPUT = {"size": 24, "mean": [0.5] * 3, "std": [0.25] * 3}


def corrupt(data: bytes, kind: str, rng, lo: int = 0, hi: int | None = None) -> bytes:
    """`data` damaged one way; byte positions drawn from [lo, hi)."""
    hi = len(data) if hi is None else hi
    if kind == "truncate":
        return data[:int(rng.integers(0, len(data)))]
    if kind == "flip":
        b = bytearray(data)
        for i in rng.integers(lo, hi, int(rng.integers(1, 9))):
            b[i] ^= int(rng.integers(1, 256))
        return bytes(b)
    if kind == "zero_run":
        start = int(rng.integers(lo, hi))
        stop = min(hi, start + int(rng.integers(1, 64)))
        return data[:start] + bytes(stop - start) + data[stop:]
    if kind == "zeros":
        return bytes(len(data))
    if kind == "empty":
        return b""
    return rng.bytes(int(rng.integers(1, min(2 * len(data), 1 << 20))))


def outcome(fn, path, error=DataError):
    """fn()'s result, or the `error` it raises, checked to be one line naming `path`."""
    try:
        return fn()
    except error as e:
        assert "\n" not in str(e) and str(path) in str(e), str(e)
        return e


# --- 3a: images and masks of a Broden-format set --------------------------------

@pytest.mark.parametrize("image_ext", [".png", ".jpg"])
@pytest.mark.parametrize("seed", [0, 1])
def test_corrupt_images(tmp_path, seed, image_ext):
    """Through load_image (every job) and ImageDataset with the model transform (activations)."""
    fx = write_broden_fixture(tmp_path / "b", image_ext=image_ext)
    table = open_broden(fx.root).table
    dataset = ImageDataset(table, input_transform(INPUT))
    rng = np.random.default_rng(seed)
    for _ in range(60):
        i = int(rng.integers(len(table)))
        path = table.paths[i]
        original = path.read_bytes()
        size = Image.open(path).size
        path.write_bytes(corrupt(original, str(rng.choice(KINDS)), rng))
        image = outcome(lambda: load_image(path), path)
        if not isinstance(image, DataError):
            assert image.mode == "RGB"
            if image_ext == ".png":  # CRCs guard the header: a PNG that decodes keeps its size
                assert image.size == size
        item = outcome(lambda: dataset[i], path)
        if not isinstance(item, DataError):
            x, image_id = item
            assert image_id == i and x.shape == (3, 24, 24) and torch.isfinite(x).all()
        path.write_bytes(original)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corrupt_masks(tmp_path, seed):
    """Through concept_masks (the concepts job) and segmentation (captions)."""
    fx = write_broden_fixture(tmp_path / "b", image_ext=".png")
    ds = open_broden(fx.root)
    masks = [(int(k.split(":")[0]), p) for k, p in sorted(fx.files.items()) if not k.endswith(":image")]
    rng = np.random.default_rng(seed)
    for _ in range(60):
        image_id, path = masks[int(rng.integers(len(masks)))]
        original = path.read_bytes()
        path.write_bytes(corrupt(original, str(rng.choice(KINDS)), rng))
        m = outcome(lambda: ds.concept_masks(image_id), path)
        if not isinstance(m, DataError):
            k = len(m.concepts)
            assert m.masks.shape == (k, SH, SW) and m.masks.dtype == bool and m.image_level.shape == (k,)
            assert (np.diff(m.concepts) > 0).all() and 0 <= m.concepts.min(initial=0)
            assert m.concepts.max(initial=0) < len(ds.concepts)
        seg = outcome(lambda: ds.segmentation(image_id), path)
        if not isinstance(seg, DataError):
            assert all(np.shape(a) in ((), (SH, SW)) for items in seg.values() for a in items)
        path.write_bytes(original)


# --- one line out of DataLoader workers ------------------------------------------

def _table_with_truncated_png(root):
    root.mkdir()
    paths = []
    for i in range(4):
        paths.append(root / f"{i}.png")
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(paths[-1])
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:len(data) - 30])  # into the IDAT chunk: "image file is truncated"
    return ImageTable(root, paths, np.array(["train"] * 4)), paths[2]


def _error_of(dataset, workers: int) -> Exception:
    batches = iter(torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers))
    try:
        for _ in batches:
            pass
    except Exception as e:
        return e
    finally:  # at once: left to the garbage collector (the traceback's cycle), torch waits 5 s
        if workers:
            batches._shutdown_workers()
    raise AssertionError("no error")


@pytest.mark.parametrize("workers", [0, 1])
def test_dataloader_error_is_one_line(tmp_path, workers):
    table, bad = _table_with_truncated_png(tmp_path / "imgs")
    e = _error_of(ImageDataset(table, input_transform(INPUT)), workers)
    assert isinstance(e, DataError)
    assert str(e).startswith(f"cannot decode image {bad}: image file is truncated") and "\n" not in str(e)
    assert one_line(e) == str(e)
    if workers:  # the worker's traceback is kept for debugging, as a note
        assert "DataLoader worker process 0" in e.__notes__[0]


def test_one_line_unwraps_foreign_worker_errors():
    """A library's error re-raised by torch keeps its type; one_line gives its own message."""
    class Failing(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise OSError("disk went away")

    e = _error_of(Failing(), 1)
    assert isinstance(e, OSError) and str(e).startswith("Caught OSError in DataLoader worker process 0.")
    assert one_line(e) == "disk went away"
    assert one_line(ValueError("plain")) == "plain"


# --- 3b: checkpoints ---------------------------------------------------------------

class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_corrupt_checkpoints(tmp_path):
    """`source: checkpoint`: random, truncated, flipped, zeroed bytes and valid torch files
    of the wrong content; a load that succeeds has the original weights. (A small torchvision
    network: the default resnet18's 45 MB would make the test slow, not stronger.)"""
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=5)
    state = net.state_dict()
    good = _torch_bytes(state)
    wrong = {"keys": {"conv1.0.weightt": state["conv1.0.weight"]},
             "shape": {**state, "fc.weight": torch.zeros(5, 256)},
             "value": {**state, "fc.bias": "five"},
             "list": list(state.values()),
             "code": {"x": _RunsCode(tmp_path / "ran")}}
    rng = np.random.default_rng(0)
    path = tmp_path / "checkpoint.pt"
    spec = {"source": "checkpoint", "arch": "shufflenet_v2_x0_5", "num_classes": 5, "path": str(path),
            "input": INPUT}
    cases = [(kind, corrupt(good, kind, rng)) for kind in KINDS for _ in range(6)]
    cases += [(what, _torch_bytes(obj)) for what, obj in wrong.items()]
    for kind, data in cases:
        path.write_bytes(data)
        loaded = outcome(lambda: load_model(spec), path, ModelError)
        assert not isinstance(loaded, ModelError) or "weights_only` set to `False" not in str(loaded)
        if not isinstance(loaded, ModelError):  # damage to zip padding, which no CRC covers
            assert kind in ("flip", "zero_run")
            got = loaded.module.state_dict()
            assert all(torch.equal(got[k], v) for k, v in state.items())
    assert not (tmp_path / "ran").exists()  # weights_only: the pickle's code never ran


@pytest.fixture(scope="module")
def world_vlm(tmp_path_factory):
    """A world VLM (nexplain-world-cnn image tower) saved as the pipeline saves it."""
    from nexplain.models.clip import new_model, save_checkpoint

    model, _ = new_model("nexplain-world-cnn", 0)
    path = tmp_path_factory.mktemp("vlm") / "good.safetensors"
    save_checkpoint(model, path)
    return path, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_corrupt_world_vlm_checkpoint(tmp_path, world_vlm):
    """`load_clip` with the job's weights file: safetensors has no checksum over the tensor
    data, so bytes are damaged in the header, where a load that succeeds must still give
    the saved weights."""
    from safetensors.torch import save_file

    good_path, state = world_vlm
    good = good_path.read_bytes()
    header_end = 8 + int.from_bytes(good[:8], "little")
    rng = np.random.default_rng(0)
    path = tmp_path / "checkpoint.safetensors"
    spec = {"name": "nexplain-world-cnn", "pretrained": None}
    cases = [corrupt(good, kind, rng, 0, header_end) for kind in KINDS for _ in range(4)]
    for data in cases:
        path.write_bytes(data)
        loaded = outcome(lambda: load_clip(spec, str(path)), path, ModelError)
        if not isinstance(loaded, ModelError):
            got = loaded[0].state_dict()
            assert all(torch.equal(got[k], v) for k, v in state.items())
    key = "visual.trunk.features.0.weight"
    for wrong, cause in (({k: v for k, v in state.items() if k != key}, f"1 missing: {key}"),
                         ({**state, key: torch.zeros(3)}, f"{key} (3,) vs"),
                         ({**state, "extra": torch.zeros(1)}, "1 unexpected: extra")):
        save_file({k: v.contiguous() for k, v in wrong.items()}, str(path))
        with pytest.raises(ModelError, match="does not fit CLIP") as e:
            load_clip(spec, str(path))
        assert cause in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
