import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from nexplain.activations.activations import extract_activations, extract_batches
from nexplain.activations.read import (MAP_ENCODING, read_all_maps, read_meta, read_peaks, read_summary,
                                      read_unit_maps, unit_columns)
from nexplain.data.images import ImageTable, load_image
from nexplain.errors import ConfigError, DataError, ModelError
from clip_fixture import register_tiny_clip
from nexplain.activations.hooks import Trace
from nexplain.models.load import load_model

N = 10
META = {"model": "tiny", "dataset": "pngs"}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N):
        path = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return ImageTable(root, paths, np.array(["train"] * N))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return load_model({"source": "torchvision", "arch": "resnet18", "weights": None, "num_classes": 3,
                       "input": {"size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}})


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    register_tiny_clip(tmp_path_factory.mktemp("clip"), "nexplain-act-vit")
    torch.manual_seed(0)
    return load_model({"source": "open_clip", "name": "nexplain-act-vit", "pretrained": None})


def direct(model, table, layer):
    """The layer's output from a plain forward pass over all images at once."""
    x = torch.stack([model.transform(load_image(p)) for p in table.paths])
    with torch.inference_mode(), Trace(model.module, layer, stop=True) as t:
        model.module(x)
    return t.output.float()


def extract(model, table, layer, tmp_path, name="a", **kw):
    s, m = tmp_path / f"{name}_summary.parquet", tmp_path / f"{name}_maps.parquet"
    meta = extract_activations(model, table, layer, s, m, batch_size=4, metadata=META,
                               progress=False, num_workers=0, **kw)
    return s, m, meta


def all_maps(path):
    meta = read_meta(path)
    maps = [read_unit_maps(path, u) for u in range(meta["n_units"])]
    assert all(np.array_equal(ids, np.arange(N)) for ids, _ in maps)
    return torch.from_numpy(np.stack([m for _, m in maps], axis=1))  # (N, U, h, w)


def close(a, b):
    return torch.allclose(torch.as_tensor(a), b, rtol=1e-4, atol=1e-5)


def test_resnet_layer_matches_direct_forward(resnet, table, tmp_path):
    ref = direct(resnet, table, "layer2")  # (N, 128, 4, 4)
    s, m, meta = extract(resnet, table, "layer2", tmp_path)
    ids, values, smeta = read_summary(s)
    assert ids.dtype == np.int32 and np.array_equal(ids, np.arange(N))
    assert values.dtype == np.float32 and values.shape == (N, 128)
    assert close(values, ref.mean((2, 3)))
    assert close(all_maps(m), ref)
    assert read_meta(m) == smeta | {"map_encoding": MAP_ENCODING} and smeta["layout"] == "image_major"
    assert {k: meta[k] for k in ("model", "layer", "dataset", "n_images", "n_units", "map_height",
                                 "map_width", "dtype", "reduce")} == {
        "model": "tiny", "layer": "layer2", "dataset": "pngs", "n_images": N, "n_units": 128,
        "map_height": 4, "map_width": 4, "dtype": "float32", "reduce": "mean"}
    for path in (s, m):
        names = pq.read_schema(path).names
        assert names[:3] == ["image_id", "u0000", "u0001"] and len(names) == 129
    _, values_max, _ = read_summary(extract(resnet, table, "layer2", tmp_path, "max", reduce="max")[0])
    assert close(values_max, ref.amax((2, 3)))


def test_vit_blocks_match_direct_forward(vit, table, tmp_path):
    for layer, reduce, resolved, summary in [
        ("transformer.resblocks.0", "auto", "mean", lambda o: o.mean(1)),  # inner block: token mean
        ("transformer.resblocks.1", "auto", "cls", lambda o: o[:, 0]),     # last block: CLS
        ("transformer.resblocks.0", "cls", "cls", lambda o: o[:, 0]),
        ("transformer.resblocks.1", "mean", "mean", lambda o: o.mean(1)),
    ]:
        ref = direct(vit, table, layer)  # (N, 1 + 16, 64): CLS then a 4 x 4 grid of patches
        assert ref.shape == (N, 17, 64)
        s, m, meta = extract(vit, table, layer, tmp_path, reduce=reduce)
        assert (meta["map_height"], meta["map_width"], meta["reduce"]) == (4, 4, resolved)
        assert close(read_summary(s)[1], summary(ref))
        patches = ref[:, 1:].transpose(1, 2).reshape(N, 64, 4, 4)  # CLS dropped, row-major grid
        assert close(all_maps(m), patches)


def test_maps_of_another_layout_are_refused(resnet, table, tmp_path):
    """A table of another layout (the unit-major one of earlier versions) or a summary
    passed as maps: a clear error naming the file and the fix, not wrong maps."""
    s, m, _ = extract(resnet, table, "layer3", tmp_path)
    t = pq.read_table(m)
    meta = read_meta(m) | {"layout": "unit_major"}
    old = tmp_path / "old.parquet"
    pq.write_table(t.replace_schema_metadata({b"nexplain": json.dumps(meta).encode()}), old)
    for path in (old, s):
        for read in (lambda p: read_unit_maps(p, 0), read_all_maps, read_peaks):
            with pytest.raises(DataError, match=f"{path.name} is not a maps table.*rerun its activations rule"):
                read(path)


def test_maps_columns_and_row_groups(resnet, table, tmp_path):
    # 3 images per row group (the batches hold 4): groups of 3, 3, 3 and 1
    _, m, _ = extract(resnet, table, "layer4", tmp_path, max_row_group_bytes=3 * 4 * (512 + 1))
    pf = pq.ParquetFile(m)
    assert [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)] == [3, 3, 3, 1]
    assert pf.schema_arrow.names == ["image_id"] + unit_columns(512)
    assert {pf.schema_arrow.field(n).type for n in unit_columns(512)} == {pa.binary(4)}  # one float32 per 1 x 1 map
    assert pf.metadata.row_group(0).column(78).compression == "UNCOMPRESSED"
    assert pf.metadata.row_group(0).column(0).statistics.has_min_max  # image_id: readers may skip groups
    ref = direct(resnet, table, "layer4")
    ids77, maps77 = read_unit_maps(m, 77)
    assert np.array_equal(ids77, np.arange(N)) and close(maps77, ref[:, 77])
    assert np.array_equal(all_maps(m).numpy(), read_all_maps(m)[1])
    some = [7, 2, 4, 7]
    ids, maps = read_all_maps(m, some)
    assert ids.tolist() == [2, 4, 7] and close(maps, ref[[2, 4, 7]])
    with pytest.raises(DataError, match="2 of the 3 image ids asked for are not in the table"):
        read_all_maps(m, [3, 11, 12])


def test_peaks_are_the_spatial_max_of_every_map(resnet, table, tmp_path):
    # row groups of 3 images: every unit's maps span 4 of them
    _, m, _ = extract(resnet, table, "layer1", tmp_path, "peaks", max_row_group_bytes=3 * 4 * (64 * 64 + 1))
    ids, peaks = read_peaks(m)
    assert np.array_equal(ids, np.arange(N)) and peaks.shape == (N, 64)
    assert np.array_equal(peaks, all_maps(m).amax((2, 3)).numpy())
    assert np.array_equal(peaks, read_all_maps(m)[1].max((2, 3)))


def test_deterministic_bytes(resnet, table, tmp_path):
    a = extract(resnet, table, "layer3", tmp_path, "a")
    b = extract(resnet, table, "layer3", tmp_path, "b")
    for x, y in zip(a[:2], b[:2]):
        assert hashlib.sha256(x.read_bytes()).digest() == hashlib.sha256(y.read_bytes()).digest()


def test_uneven_batches_give_the_same_bytes(resnet, tmp_path):
    # Batches of 2, 5 and 3 images (NCHW, ids with gaps) into row groups of 4 images: the
    # same tables as one batch of 10, and the maps of a plain forward pass.
    x = torch.randn(10, 3, 32, 32)
    ids = torch.arange(0, 30, 3)
    outputs = []
    for cuts in ([0, 2, 7, 10], [0, 10]):
        batches = [(x[a:b], ids[a:b]) for a, b in zip(cuts, cuts[1:])]
        s, m = tmp_path / f"s{len(cuts)}.parquet", tmp_path / f"m{len(cuts)}.parquet"
        extract_batches(resnet.module, "layer2", batches, 10, s, m, max_row_group_bytes=4 * 4 * (128 * 16 + 1))
        outputs.append((s.read_bytes(), m.read_bytes()))
    assert outputs[0] == outputs[1]
    assert pq.ParquetFile(m).metadata.num_row_groups == 3
    with torch.inference_mode(), Trace(resnet.module, "layer2", stop=True) as t:
        resnet.module(x)
    got_ids, maps = read_all_maps(m)
    assert np.array_equal(got_ids, ids.numpy())
    assert close(maps, t.output.float())
    assert close(read_summary(s)[1], t.output.float().mean((2, 3)))


def test_failures_leave_nothing_behind(resnet, tmp_path):
    batches = [(torch.randn(4, 3, 32, 32), torch.arange(4))]
    s, m = tmp_path / "s.parquet", tmp_path / "m.parquet"
    with pytest.raises(DataError, match="expected 6"):
        extract_batches(resnet.module, "layer1", batches, 6, s, m)
    with pytest.raises(ModelError, match="layer9"):
        extract_batches(resnet.module, "layer9", batches, 4, s, m)
    with pytest.raises(ConfigError, match="reduce"):
        extract_batches(resnet.module, "layer1", batches, 4, s, m, reduce="median")
    with pytest.raises(ConfigError, match="cls"):
        extract_batches(resnet.module, "layer1", batches, 4, s, m, reduce="cls")
    with pytest.raises(DataError, match="strictly increasing"):
        extract_batches(resnet.module, "layer1", batches + [(torch.randn(2, 3, 32, 32), torch.tensor([3, 4]))], 6, s, m)
    assert list(tmp_path.iterdir()) == []  # no outputs or temp files
    extract_batches(resnet.module, "fc", batches, 4, s, m)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet", "s.parquet"]
    assert read_meta(m)["map_height"] == 1


def test_with_a_loader_worker(resnet, table, tmp_path):
    s, m = tmp_path / "s.parquet", tmp_path / "m.parquet"
    extract_activations(resnet, table, "layer3", s, m, batch_size=4, metadata=META, progress=False)
    assert close(read_summary(s)[1], direct(resnet, table, "layer3").mean((2, 3)))


def test_unit_column_names():
    assert unit_columns(3) == ["u0000", "u0001", "u0002"]
    assert unit_columns(10000)[-1] == "u9999"
    assert unit_columns(10001)[-1] == "u10000" and unit_columns(10001)[0] == "u00000"
