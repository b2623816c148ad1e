import csv
import hashlib

import numpy as np
import pytest
from PIL import Image

from nexplain.data.world import CATEGORIES, CLASSES, INDEX_COLUMNS, LABELS, generate_world, matching_classes

N = 40


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "w"
    summary = generate_world(root, n_images=N, image_size=48, mask_size=24, seed=3, progress=False)
    return root, summary


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _decode(path):
    a = np.asarray(Image.open(path).convert("RGB"), np.int32)
    return a[..., 0] + 256 * a[..., 1]


def test_same_seed_same_bytes_other_seed_other_images(world, tmp_path):
    root, _ = world
    generate_world(tmp_path / "again", n_images=N, image_size=48, mask_size=24, seed=3, progress=False)
    assert _digest(tmp_path / "again") == _digest(root)
    generate_world(tmp_path / "other", n_images=N, image_size=48, mask_size=24, seed=4, progress=False)
    other = _digest(tmp_path / "other")
    assert other["images/world/00000.png"] != _digest(root)["images/world/00000.png"]


def test_image_does_not_depend_on_dataset_size(world, tmp_path):
    root, _ = world
    generate_world(tmp_path / "small", n_images=N // 2, image_size=48, mask_size=24, seed=3, progress=False)
    a, b = root / "images/world/00007.png", tmp_path / "small/images/world/00007.png"
    # the class assignment differs with N, so compare only when it is the same
    cls = {r["image"]: r["class"] for r in _rows(root / "image_class.csv")}
    cls_small = {r["image"]: r["class"] for r in _rows(tmp_path / "small/image_class.csv")}
    if cls["world/00007.png"] == cls_small["world/00007.png"]:
        assert a.read_bytes() == b.read_bytes()


def test_broden_files_and_concept_counts(world):
    root, summary = world
    with open(root / "index.csv") as f:
        assert f.readline().strip().split(",") == INDEX_COLUMNS
    index = _rows(root / "index.csv")
    assert len(index) == N
    labels = _rows(root / "label.csv")
    assert len(labels) == summary["n_concepts"] >= 30
    assert len({l["category"].split("(")[0] for l in labels}) >= 4
    for cat in CATEGORIES:
        assert len(_rows(root / f"c_{cat}.csv")) == len(CATEGORIES[cat])
    assert {r["split"] for r in index} == {"train", "val", "test"}
    assert sum(r["split"] == "train" for r in index) == round(0.7 * N)


def test_masks_decode_to_labels_of_their_category(world):
    root, _ = world
    number_to_cat = {n: c for (c, _), n in LABELS.items()}
    for row in _rows(root / "index.csv"):
        img = Image.open(root / "images" / row["image"])
        assert img.size == (48, 48) and img.mode == "RGB"
        assert number_to_cat[int(row["scene"])] == "scene"
        for cat in ("color", "object", "texture", "part"):
            for png in filter(None, row[cat].split(";")):
                values = set(np.unique(_decode(root / "images" / png)).tolist()) - {0}
                assert values and all(number_to_cat[v] == cat for v in values)
        n_objects = len(np.unique(_decode(root / "images" / row["object"]))) - 1
        assert len(row["part"].split(";")) >= n_objects >= 1


def test_every_image_satisfies_exactly_its_class_rule(world):
    """Ground truth re-derived from the written masks: objects are the connected colour/shape/texture triples."""
    root, summary = world
    name_of = {n: name for (_, name), n in LABELS.items()}
    classes = {r["image"]: int(r["class"]) for r in _rows(root / "image_class.csv")}
    for row in _rows(root / "index.csv"):
        parts = [_decode(root / "images" / p) for p in row["part"].split(";")]
        masks = {c: _decode(root / "images" / row[c]) for c in ("object", "color", "texture")}
        objects = []
        for part in parts:  # one part PNG per object: its pixels identify the object
            where = part > 0
            objects.append(tuple(name_of[int(np.bincount(masks[c][where]).argmax())] for c in ("object", "color", "texture")))
        assert matching_classes(name_of[int(row["scene"])], objects) == [classes[row["image"]]]
    counts = summary["class_counts"]
    assert len(counts) == len(CLASSES) and max(counts) - min(counts) <= 1


def test_bad_arguments_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="n_images"):
        generate_world(tmp_path / "x", n_images=0)
    with pytest.raises(ValueError, match="splits"):
        generate_world(tmp_path / "x", n_images=5, splits={"train": 0.5, "val": 0.1, "test": 0.1})
    assert not (tmp_path / "x").exists()
