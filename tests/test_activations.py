import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from nexplain.activations.activations import extract_activations, extract_batches
from nexplain.activations.read import (read_all_maps, read_meta, read_peaks, read_summary, read_unit_maps,
                                      unit_columns)
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
    assert read_meta(m) == smeta | {"layout": "unit_major", "map_encoding": "float32 little-endian, row-major h x w"}
    assert {k: meta[k] for k in ("model", "layer", "dataset", "n_images", "n_units", "map_height",
                                 "map_width", "dtype", "reduce")} == {
        "model": "tiny", "layer": "layer2", "dataset": "pngs", "n_images": N, "n_units": 128,
        "map_height": 4, "map_width": 4, "dtype": "float32", "reduce": "mean"}
    assert read_meta(m)["layout"] == "unit_major"
    names = pq.read_schema(s).names
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


def test_maps_of_float_list_tables_still_read(resnet, table, tmp_path):
    """Tables written before the binary map column (float lists) read to the same maps."""
    _, m, _ = extract(resnet, table, "layer3", tmp_path)
    t = pq.read_table(m)
    h, w = read_meta(m)["map_height"], read_meta(m)["map_width"]
    floats = pa.array(np.frombuffer(t.column("map").combine_chunks().buffers()[1], "<f4"))
    lists = t.set_column(2, "map", pa.FixedSizeListArray.from_arrays(floats, h * w))
    old = tmp_path / "lists.parquet"
    pq.write_table(lists, old, row_group_size=len(t) // 4)
    for unit in (0, 77, 255):
        ids_new, new_maps = read_unit_maps(m, unit)
        ids_old, old_maps = read_unit_maps(old, unit)
        assert np.array_equal(ids_new, ids_old) and np.array_equal(new_maps, old_maps)
    assert np.array_equal(read_all_maps(m)[1], read_all_maps(old)[1])


def test_maps_sorted_and_row_groups(resnet, table, tmp_path):
    _, m, _ = extract(resnet, table, "layer4", tmp_path, units_per_row_group=64)
    pf = pq.ParquetFile(m)
    assert pf.num_row_groups == 512 // 64
    t = pq.read_table(m)
    units, ids = t.column("unit").to_numpy(), t.column("image_id").to_numpy()
    assert np.array_equal(np.lexsort((ids, units)), np.arange(len(units)))
    assert t.schema.field("map").type == pa.binary(4)  # one float32 per 1 x 1 map
    assert pf.metadata.row_group(0).column(2).compression == "UNCOMPRESSED"
    ids7, maps7 = read_unit_maps(m, 77)
    ref = direct(resnet, table, "layer4")
    assert close(maps7, ref[:, 77])
    # A row group smaller than one unit splits the unit across several row groups.
    _, m2, _ = extract(resnet, table, "layer1", tmp_path, "split", max_row_group_bytes=3 * (64 * 4 + 8))
    pf2 = pq.ParquetFile(m2)
    assert pf2.num_row_groups == 64 * 4  # 10 images per unit in groups of 3
    assert max(pf2.metadata.row_group(g).num_rows for g in range(pf2.num_row_groups)) == 3
    assert close(read_unit_maps(m2, 5)[1], direct(resnet, table, "layer1")[:, 5])


def test_peaks_are_the_spatial_max_of_every_map(resnet, table, tmp_path):
    # row groups of 3 rows: each unit's maps span several groups (the first holds 3 of the 10 images)
    _, m, _ = extract(resnet, table, "layer1", tmp_path, "peaks", max_row_group_bytes=3 * (64 * 4 + 8))
    ids, peaks = read_peaks(m)
    assert np.array_equal(ids, np.arange(N)) and peaks.shape == (N, 64)
    assert np.array_equal(peaks, all_maps(m).amax((2, 3)).numpy())
    assert np.array_equal(peaks, read_all_maps(m)[1].max((2, 3)))


def test_deterministic_bytes(resnet, table, tmp_path):
    a = extract(resnet, table, "layer3", tmp_path, "a")
    b = extract(resnet, table, "layer3", tmp_path, "b")
    for x, y in zip(a[:2], b[:2]):
        assert hashlib.sha256(x.read_bytes()).digest() == hashlib.sha256(y.read_bytes()).digest()


@pytest.mark.parametrize("in_memory", [True, False])
def test_uneven_batches_fill_the_spill(resnet, tmp_path, monkeypatch, in_memory):
    # Batches of 2, 5 and 3 images land at their offsets in the unit-major spill (in memory,
    # or the file on disk past SPILL_IN_MEMORY); NCHW; ids with gaps; the same bytes either way.
    import nexplain.activations.activations as extraction

    x = torch.randn(10, 3, 32, 32)
    ids = torch.arange(0, 30, 3)
    cuts = [0, 2, 7, 10]
    batches = [(x[a:b], ids[a:b]) for a, b in zip(cuts, cuts[1:])]
    s, m = tmp_path / "s.parquet", tmp_path / "m.parquet"
    monkeypatch.setattr(extraction, "SPILL_IN_MEMORY", 1 << 30 if in_memory else 0)
    extract_batches(resnet.module, "layer2", batches, 10, s, m)
    with torch.inference_mode(), Trace(resnet.module, "layer2", stop=True) as t:
        resnet.module(x)
    got_ids, maps = read_all_maps(m)
    assert np.array_equal(got_ids, ids.numpy())
    assert close(maps, t.output.float())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet", "s.parquet"]  # spill removed
    monkeypatch.setattr(extraction, "SPILL_IN_MEMORY", 0 if in_memory else 1 << 30)
    extract_batches(resnet.module, "layer2", batches, 10, tmp_path / "s2.parquet", tmp_path / "m2.parquet")
    assert m.read_bytes() == (tmp_path / "m2.parquet").read_bytes()


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
    assert list(tmp_path.iterdir()) == []  # no outputs, temp files or spill
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
