"""Concept tables and packed masks built from the Broden fixture."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from broden_fixture import CONCEPT_NUMBERS, EXPECTED_SHARE, IMAGES, SH, SW, write_broden_fixture
from nexplain.data.broden import open_broden
from nexplain.data.concepts import PackedMasks, build_concept_tables, column_names
from nexplain.errors import DataError

FILES = ["concepts.parquet", "presence.parquet", "share.parquet",
         "masks/bits.u8", "masks/index.parquet", "masks/meta.json"]


@pytest.fixture
def built(tmp_path):
    fx = write_broden_fixture(tmp_path / "broden")
    ds = open_broden(fx.root)
    out = tmp_path / "concepts"
    build_concept_tables(ds, out, progress=False)
    return fx, ds, out


def expected_share() -> np.ndarray:
    share = np.zeros((len(IMAGES), len(CONCEPT_NUMBERS)), np.float32)
    for i, by_number in enumerate(EXPECTED_SHARE):
        for n, v in by_number.items():
            share[i, CONCEPT_NUMBERS.index(n)] = v
    return share


def test_files_written(built):
    _, _, out = built
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(FILES)


def test_presence_and_share_equal_hand_computed(built):
    _, ds, out = built
    names = column_names(ds.concepts)
    assert "glass-11" in names and "glass-12" in names
    share = pq.read_table(out / "share.parquet")
    presence = pq.read_table(out / "presence.parquet")
    assert share.column_names == ["image_id"] + names == presence.column_names
    assert share["image_id"].to_numpy().tolist() == list(range(len(IMAGES)))
    got = np.stack([share[n].to_numpy() for n in names], axis=1)
    np.testing.assert_array_equal(got, expected_share())
    pres = np.stack([presence[n].to_numpy() for n in names], axis=1)
    np.testing.assert_array_equal(pres, expected_share() > 0)
    assert str(share.schema.field("red-c").type) == "float"
    assert str(presence.schema.field("image_id").type) == "int32"


def test_schema_metadata_and_no_pandas_index(built):
    _, _, out = built
    meta = pq.read_schema(out / "presence.parquet").metadata
    assert b"pandas" not in meta
    assert json.loads(meta[b"nexplain.n_images"]) == len(IMAGES)
    assert json.loads(meta[b"nexplain.n_concepts"]) == len(CONCEPT_NUMBERS)
    assert json.loads(meta[b"nexplain.mask_shape"]) == [SH, SW]
    assert json.loads(meta[b"nexplain.dataset"]) == "broden"


def test_concepts_table(built):
    _, _, out = built
    df = pq.read_table(out / "concepts.parquet").to_pandas().set_index("number")
    share = expected_share()
    assert df["n_images"].tolist() == (share > 0).sum(axis=0).tolist()
    assert df["n_pixels"].tolist() == np.rint(share.sum(axis=0) * SH * SW).astype(int).tolist()
    assert df.loc[[7, 8, 9], "kind"].eq("image").all()
    assert df.loc[[1, 5, 13, 300], "kind"].eq("pixel").all()
    assert df.loc[5, "category"] == "object"


def test_packed_masks_round_trip(built):
    fx, ds, out = built
    pm = PackedMasks(out / "masks")
    meta = json.loads((out / "masks/meta.json").read_text())
    assert meta["row_bytes"] == 8 and meta["bitorder"] == "big"
    assert (meta["N"], meta["C"], meta["sh"], meta["sw"]) == (len(IMAGES), len(CONCEPT_NUMBERS), SH, SW)
    direct = [ds.concept_masks(i) for i in range(len(IMAGES))]
    for c in range(len(CONCEPT_NUMBERS)):
        expected = {i: m.masks[list(m.concepts).index(c)] for i, m in enumerate(direct)
                    if c in m.concepts}
        ids, masks = pm.concept_mask(c)
        assert ids.tolist() == sorted(expected) == pm.concept_images(c).tolist()
        for i, mask in zip(ids, masks):
            np.testing.assert_array_equal(mask, expected[i])
        dense = pm.dense(c)
        assert dense.shape == (len(IMAGES), SH, SW)
        assert dense.sum() == sum(m.sum() for m in expected.values())


def test_index_sorted_and_rows_contiguous(built):
    _, _, out = built
    idx = pq.read_table(out / "masks/index.parquet").to_pandas()
    assert idx.equals(idx.sort_values(["concept", "image_id"]).reset_index(drop=True))
    rows = idx["row"][idx["row"] >= 0].tolist()
    assert rows == list(range(len(rows)))
    assert (idx["row"] == -1).sum() == 7          # scene/texture image-level pairs
    assert (out / "masks/bits.u8").stat().st_size == len(rows) * 8


def test_deterministic_bytes(tmp_path, built):
    fx, ds, out = built
    again = tmp_path / "again"
    build_concept_tables(open_broden(fx.root), again, progress=False)
    for f in FILES:
        assert (out / f).read_bytes() == (again / f).read_bytes(), f


def test_no_partial_output_on_corrupt_mask(tmp_path):
    fx = write_broden_fixture(tmp_path / "broden")
    fx.files["4:material:0"].write_bytes(b"broken")
    out = tmp_path / "concepts"
    with pytest.raises(DataError, match="ADE_val_00000002_material.png"):
        build_concept_tables(open_broden(fx.root), out, progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "broden"]   # no temp folder left


def test_large_mask_shape_row_bytes(tmp_path):
    from nexplain.data.concepts import pack_masks, row_bytes_for
    assert row_bytes_for((112, 112)) == 1568
    assert row_bytes_for((7, 7)) == 8
    rng = np.random.default_rng(0)
    m = rng.random((3, 112, 112)) < 0.3
    packed = pack_masks(m, 1568)
    back = np.unpackbits(packed, axis=1, count=112 * 112, bitorder="big").reshape(3, 112, 112)
    np.testing.assert_array_equal(back.astype(bool), m)
