"""ImageFolder and CSV readers, and the open_dataset dispatcher."""

import numpy as np
import pytest
from PIL import Image

from broden_fixture import write_broden_fixture
from nexplain.data.folder import open_csv, open_dataset, open_imagefolder
from nexplain.errors import ConfigError, DataError


def touch_image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path, format="PNG")


def test_flat_imagefolder(tmp_path):
    for rel in ["dog/b.png", "dog/a.JPG", "cat/z.jpeg", "cat/sub/y.webp", "cat/notes.txt", ".hidden/x.png"]:
        touch_image(tmp_path / rel)
    t = open_imagefolder(tmp_path)
    rel = [str(p.relative_to(tmp_path.resolve())) for p in t.paths]
    assert rel == ["cat/sub/y.webp", "cat/z.jpeg", "dog/a.JPG", "dog/b.png"]
    assert t.class_names == ["cat", "dog"]
    assert t.labels.tolist() == [0, 0, 1, 1]
    assert t.splits.tolist() == ["", "", "", ""]


def test_split_imagefolder(tmp_path):
    for rel in ["val/cat/1.png", "train/dog/1.png", "train/cat/1.png", "test/bird/1.bmp"]:
        touch_image(tmp_path / rel)
    t = open_imagefolder(tmp_path)
    assert t.class_names == ["bird", "cat", "dog"]
    assert t.splits.tolist() == ["train", "train", "val", "test"]
    assert t.labels.tolist() == [1, 2, 1, 0]
    assert t.split_ids("val").tolist() == [2]


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_imagefolder(tmp_path / "nope")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="no images"):
        open_imagefolder(tmp_path)


def test_csv_reader(tmp_path):
    for rel in ["imgs/a.png", "imgs/b.png", "imgs/c.png"]:
        touch_image(tmp_path / rel)
    csv = tmp_path / "list.csv"
    csv.write_text(f"path,label,split\nimgs/a.png,dog,train\nimgs/b.png,cat,val\n{tmp_path}/imgs/c.png,dog,\n")
    t = open_csv(csv)
    assert t.paths == [tmp_path.resolve() / "imgs/a.png", tmp_path.resolve() / "imgs/b.png",
                       tmp_path / "imgs/c.png"]
    assert t.class_names == ["cat", "dog"] and t.labels.tolist() == [1, 0, 1]
    assert t.splits.tolist() == ["train", "val", ""]


def test_csv_integer_labels_no_split(tmp_path):
    touch_image(tmp_path / "a.png")
    csv = tmp_path / "l.csv"
    csv.write_text("path,label\na.png,12\na.png,3\n")
    t = open_csv(csv)
    assert t.labels.tolist() == [12, 3] and t.class_names is None
    assert t.splits.tolist() == ["", ""]


def test_csv_errors(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("file,label\na.png,1\n")
    with pytest.raises(DataError, match="path"):
        open_csv(csv)
    csv.write_text("path,label\nmissing.png,1\n")
    with pytest.raises(DataError, match="missing.png"):
        open_csv(csv)


def test_open_dataset_dispatch(tmp_path):
    fx = write_broden_fixture(tmp_path / "broden")
    assert len(open_dataset("broden", fx.root)) == 5
    touch_image(tmp_path / "tree/cat/a.png")
    assert open_dataset("imagefolder", tmp_path / "tree").class_names == ["cat"]
    (tmp_path / "tree/l.csv").write_text("path,label\ncat/a.png,0\n")
    assert len(open_dataset("csv", tmp_path / "tree/l.csv")) == 1
    with pytest.raises(ConfigError, match="broden, imagefolder, csv"):
        open_dataset("hdf5", tmp_path)
