"""Broden-format reader on the hand-designed fixture."""

import numpy as np
import pytest
from PIL import Image

from broden_fixture import (CATEGORIES, CONCEPT_NUMBERS, IMAGES, PRIMARY, SH, SW,
                            write_broden_fixture, write_label_png)
from nexplain.data.broden import open_broden
from nexplain.errors import DataError


@pytest.fixture
def fx(tmp_path):
    return write_broden_fixture(tmp_path / "broden")


def test_concepts_categories_and_primary_category(fx):
    ds = open_broden(fx.root)
    assert ds.categories == CATEGORIES
    assert ds.concepts["number"].tolist() == CONCEPT_NUMBERS   # 14 has no category: dropped
    assert ds.concepts["concept"].tolist() == list(range(len(CONCEPT_NUMBERS)))
    assert dict(zip(ds.concepts["number"], ds.concepts["category"])) == PRIMARY
    assert ds.concepts.set_index("number").loc[5, "category"] == "object"  # material(2);object(3)
    assert ds.mask_shape == (SH, SW)


def test_image_table(fx):
    ds = open_broden(fx.root)
    t = ds.table
    assert len(t) == len(IMAGES)
    assert t.paths == [fx.root.resolve() / "images" / p for p in IMAGES]
    assert t.splits.tolist() == ["train", "val", "train", "train", "val"]
    assert t.labels is None
    assert ds.image(0).size == (16, 16)


def test_optional_label_zero_row(tmp_path):
    fx = write_broden_fixture(tmp_path / "b", label_zero_row=True)
    assert open_broden(fx.root).concepts["number"].tolist() == CONCEPT_NUMBERS


def test_concept_masks_match_fixture(fx):
    ds = open_broden(fx.root)
    number = ds.concepts["number"].to_numpy()
    for i in range(len(IMAGES)):
        m = ds.concept_masks(i)
        got = {int(number[c]): (mask, lvl) for c, mask, lvl in zip(m.concepts, m.masks, m.image_level)}
        assert set(got) == set(fx.masks[i]) | fx.image_level[i], i
        for n, (mask, lvl) in got.items():
            assert lvl == (n in fx.image_level[i])
            expected = np.ones((SH, SW), bool) if lvl else fx.masks[i][n]
            np.testing.assert_array_equal(mask, expected, err_msg=f"image {i} label {n}")


def test_part_pngs_are_ored_and_label_over_255_decodes(fx):
    ds = open_broden(fx.root)
    seg = ds.segmentation(0)
    assert len(seg["part"]) == 2 and seg["scene"] == [7] and seg["texture"] == [9]
    assert 300 in np.unique(seg["part"][0])               # R=44, G=1
    m = ds.concept_masks(0)
    wheel = m.masks[list(m.concepts).index(12)]
    head = m.masks[list(m.concepts).index(5)]
    assert wheel.sum() == 9 and wheel[0, 0] and wheel[7, 0]  # pixels from both PNGs
    assert (wheel & head).sum() == 4                       # a pixel may carry two labels


def test_image_level_labels_broadcast(fx):
    ds = open_broden(fx.root)
    m = ds.concept_masks(1)                                # scene cell "7;8"
    assert m.concepts.tolist() == [0, 6, 7]
    assert m.image_level.tolist() == [False, True, True]
    assert m.masks[1:].all()


def test_empty_cells_give_no_concepts(fx):
    m = open_broden(fx.root).concept_masks(3)
    assert len(m.concepts) == 0 and m.masks.shape == (0, SH, SW)


def test_category_labels(fx):
    df = open_broden(fx.root).category_labels("part")
    assert df["number"].tolist() == [4, 6, 300] and df["code"].tolist() == [1, 2, 3]


def test_index_cells_stay_strings(fx):
    ds = open_broden(fx.root)
    assert ds.index["scene"].tolist() == ["7", "7;8", "", "", "8"]


def test_missing_root_and_csvs(tmp_path, fx):
    with pytest.raises(DataError, match="nowhere"):
        open_broden(tmp_path / "nowhere")
    (fx.root / "label.csv").unlink()
    with pytest.raises(DataError, match="label.csv"):
        open_broden(fx.root)
    (fx.root / "index.csv").unlink()
    with pytest.raises(DataError, match="index.csv"):
        open_broden(fx.root)


def test_missing_image_names_file(fx):
    fx.files["2:image"].unlink()
    with pytest.raises(DataError, match="2008_000001.jpg"):
        open_broden(fx.root)


def test_corrupt_image_names_file(fx):
    fx.files["2:image"].write_bytes(b"not a jpeg")
    ds = open_broden(fx.root)
    with pytest.raises(DataError, match="2008_000001.jpg"):
        ds.image(2)


def test_corrupt_mask_names_file(fx):
    path = fx.files["0:part:1"]
    path.write_bytes(b"\x89PNG garbage")
    ds = open_broden(fx.root)
    with pytest.raises(DataError, match=str(path.name)):
        ds.concept_masks(0)


def test_missing_mask_names_file(fx):
    path = fx.files["2:object:0"]
    path.unlink()
    with pytest.raises(DataError, match=path.name):
        open_broden(fx.root).concept_masks(2)


def test_wrong_mask_size_names_file(fx):
    path = fx.files["4:material:0"]
    write_label_png(path, np.full((SH + 1, SW), 5, dtype=np.int32))
    with pytest.raises(DataError, match=rf"{path.name}.*9x8"):
        open_broden(fx.root).concept_masks(4)


def test_unknown_label_names_mask_and_number(fx):
    path = fx.files["1:color:0"]
    arr = np.ones((SH, SW), np.int32)
    arr[3, 3] = 999
    write_label_png(path, arr)
    with pytest.raises(DataError, match=rf"{path.name}.*999"):
        open_broden(fx.root).concept_masks(1)


def test_unknown_image_level_label(fx):
    text = (fx.root / "index.csv").read_text().replace(",7;8,", ",7;77,")
    (fx.root / "index.csv").write_text(text)
    with pytest.raises(DataError, match="77"):
        open_broden(fx.root).concept_masks(1)


def test_missing_category_columns_tolerated(fx):
    lines = (fx.root / "index.csv").read_text().splitlines()
    cut = [",".join(line.split(",")[:-1]) for line in lines]   # drop `texture`
    (fx.root / "index.csv").write_text("\n".join(cut) + "\n")
    ds = open_broden(fx.root)
    assert ds.categories == CATEGORIES
    m = ds.concept_masks(2)
    assert 8 not in m.concepts.tolist()                       # striped came from texture


def test_world_class_labels(fx):
    (fx.root / "classes.csv").write_text("number,name,rule\n0,cat,a\n1,dog,b\n")
    rows = "\n".join(f"{im},{i % 2}" for i, im in enumerate(IMAGES[:-1]))
    (fx.root / "image_class.csv").write_text("image,class\n" + rows + "\n")
    t = open_broden(fx.root).table
    assert t.class_names == ["cat", "dog"]
    assert t.labels.tolist() == [0, 1, 0, 1, -1]  # -1: no class, left out of training
    assert t.meta["labels_file"] == str(fx.root.resolve() / "image_class.csv")  # for messages


def test_rgba_masks(fx):
    path = fx.files["4:material:0"]
    Image.fromarray(np.full((SH, SW, 4), (5, 0, 0, 255), np.uint8), "RGBA").save(path)
    m = open_broden(fx.root).concept_masks(4)
    assert 4 in m.concepts.tolist()


def test_grey_alpha_mask_carries_the_label_in_grey(fx):
    """LA follows the single-channel rule (alpha ignored, as for RGBA), not R + 256*G."""
    path = fx.files["4:material:0"]
    Image.fromarray(np.full((SH, SW, 2), (5, 255), np.uint8), "LA").save(path)
    m = open_broden(fx.root).concept_masks(4)
    assert m.masks[m.concepts.tolist().index(4)].all()  # concept 4 = label 5, wood


def test_mask_without_a_label_rule_refused(fx):
    """A mask that decodes as CMYK (here a JPEG behind a .png name) has no label rule."""
    path = fx.files["4:material:0"]
    Image.new("CMYK", (SW, SH), (5, 0, 0, 0)).save(path, format="JPEG")
    with pytest.raises(DataError, match=rf"^mask {path} has image mode CMYK; a mask must be RGB or RGBA"):
        open_broden(fx.root).concept_masks(4)


def test_truncated_mask_is_one_line(fx):
    path = fx.files["0:color:0"]
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError) as e:
        open_broden(fx.root).concept_masks(0)
    assert str(e.value).startswith(f"cannot decode mask {path}: ") and "\n" not in str(e.value)
