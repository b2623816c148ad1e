import logging

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from broden_fixture import SPLITS, write_broden_fixture
from nexplain.data.broden import open_broden
from nexplain.data.folder import open_csv
from nexplain.data.images import ImageTable
from nexplain.errors import DataError
from nexplain.models.load import load_model
from nexplain.models.train import (augment, decode_images, labelled_splits, save_checkpoint,
                                   train_classifier)

COLORS = [(220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 40)]
KW = dict(arch="resnet18", image_size=32, epochs=3, batch_size=16, lr=0.02, weight_decay=5e-4,
          seed=0, threads=2, mean=[0.5] * 3, std=[0.25] * 3, progress=False)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """4 classes by the colour of a square on a noisy background; 48 train, 8 val, 8 test."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(64):
        label = i % 4
        pixels = rng.integers(0, 90, (36, 36, 3), dtype=np.uint8)
        y, x = rng.integers(2, 18, 2)
        pixels[y:y + 16, x:x + 16] = COLORS[label]
        paths.append(root / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
        labels.append(label)
    splits = np.array(["train"] * 48 + ["val"] * 8 + ["test"] * 8)
    return ImageTable(root, paths, splits, np.array(labels), ["red", "green", "blue", "yellow"])


def test_trains_and_reports(table):
    model, metrics = train_classifier(table, **KW)
    assert not model.training
    history = metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert metrics["chance"] == 0.25 and metrics["num_classes"] == 4
    assert 0 <= metrics["test_accuracy"] <= 1 and 0 <= metrics["val_accuracy"] <= 1
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (48, 8, 8)
    assert "seconds" not in metrics  # artifacts carry no timings
    assert "unlabelled_images" not in metrics  # a fully labelled dataset: the keys of old


def test_same_call_same_checkpoint_bytes(table, tmp_path):
    kw = KW | {"epochs": 1}
    a, _ = train_classifier(table, **kw)
    b, _ = train_classifier(table, **kw)
    save_checkpoint(a, tmp_path / "a.pt")
    save_checkpoint(b, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    # ...and the checkpoint loads back as the same network, with the same preprocessing.
    loaded = load_model({"source": "checkpoint", "arch": "resnet18", "num_classes": 4,
                         "path": str(tmp_path / "a.pt"),
                         "input": {"size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}})
    x = decode_images(table, table.split_ids("test"), 32)
    via_transform = torch.stack([loaded.transform(Image.open(table.paths[i]).convert("RGB"))
                                 for i in table.split_ids("test")])
    assert torch.allclose(via_transform, (x / 255 - 0.5) / 0.25, atol=1e-5)
    with torch.inference_mode():
        assert torch.allclose(loaded.module(via_transform), a(via_transform), rtol=1e-4, atol=1e-4)


def test_snapshots_are_the_init_and_the_epochs_and_leave_training_unchanged(table, tmp_path):
    """on_epoch sees the random init (epoch 0) and every epoch; the last snapshot is the model, and
    taking snapshots changes nothing about the training."""
    kw = KW | {"epochs": 2}
    seen = {}

    def keep(epoch, model):
        save_checkpoint(model, tmp_path / f"{epoch}.pt")
        seen[epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    model, _ = train_classifier(table, **kw, on_epoch=keep)
    plain, _ = train_classifier(table, **kw)
    assert sorted(seen) == [0, 1, 2]
    save_checkpoint(model, tmp_path / "final.pt")
    save_checkpoint(plain, tmp_path / "plain.pt")
    assert (tmp_path / "2.pt").read_bytes() == (tmp_path / "final.pt").read_bytes() == (tmp_path / "plain.pt").read_bytes()
    torch.manual_seed(kw["seed"])  # epoch 0 is the seeded random init, before any step
    init = torchvision.models.get_model("resnet18", weights=None, num_classes=4).state_dict()
    w = "conv1.weight"
    assert torch.equal(seen[0][w], init[w]) and not torch.equal(seen[1][w], init[w])


def test_low_res_epochs_see_smaller_batches_and_end_at_full_size(table, monkeypatch):
    import nexplain.models.train as train

    sizes = []
    real = train.augment
    monkeypatch.setattr(train, "augment", lambda b, g, size=None: sizes.append(size) or real(b, g, size))
    _, metrics = train_classifier(table, **KW | {"low_res": {"size": 16, "epochs": 2}})
    per_epoch = len(sizes) // KW["epochs"]
    assert sizes == [16] * (2 * per_epoch) + [32] * per_epoch  # KW: 3 epochs at 32 px
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    gen = torch.Generator().manual_seed(0)
    assert real(torch.zeros((2, 3, 32, 32), dtype=torch.uint8), gen, 16).shape == (2, 3, 16, 16)


def test_augment_keeps_content():
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (16, 3, 20, 20), dtype=torch.uint8)
    out = augment(batch, gen)
    assert out.shape == (16, 3, 20, 20) and out.dtype == torch.float32
    assert torch.equal(out, augment(batch, torch.Generator().manual_seed(0)))
    flat = torch.full((1, 3, 20, 20), 7, dtype=torch.uint8)
    assert torch.equal(augment(flat, gen), torch.full((1, 3, 20, 20), 7.0))  # shifts pad by reflection


def test_needs_labels(table):
    unlabelled = ImageTable(table.root, table.paths, table.splits)
    with pytest.raises(DataError, match="labels"):
        train_classifier(unlabelled, **KW)


def test_unlabelled_images_left_out(table, caplog):
    """No -1 target reaches the loss (it crashed) or the accuracy (it counted as wrong)."""
    labels = table.labels.copy()
    labels[[0, 1, 2, 60]] = -1  # 3 train images, 1 test image
    unlabelled = ImageTable(table.root, table.paths, table.splits, labels, table.class_names,
                            {"labels_file": "world/image_class.csv"})
    with caplog.at_level(logging.WARNING, logger="nexplain"):
        _, metrics = train_classifier(unlabelled, **KW | {"epochs": 1})
    assert metrics["unlabelled_images"] == {"train": 3, "val": 0, "test": 1}
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (45, 8, 7)
    assert round(metrics["test_accuracy"] * 7, 6).is_integer()
    assert ("images without a class in world/image_class.csv are left out of training and "
            "evaluation: train 3 of 48, val 0 of 8, test 1 of 8") in caplog.text


def test_metric_split_without_labelled_images_refused(tmp_path):
    """Broden's val images lack rows in image_class.csv: refused, not a val accuracy of 0."""
    fx = write_broden_fixture(tmp_path / "b")
    (fx.root / "classes.csv").write_text("number,name,rule\n0,cat,a\n1,dog,b\n")
    rows = [f"{im},{i % 2}" for i, (im, split) in enumerate(zip(fx.images, SPLITS)) if split == "train"]
    (fx.root / "image_class.csv").write_text("image,class\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as e:
        train_classifier(open_broden(fx.root).table, **KW | {"batch_size": 1, "epochs": 1})
    assert str(e.value) == (f"{fx.root.resolve() / 'image_class.csv'} gives none of the 2 val images "
                            "a class; the val accuracy needs labelled images")


def test_unlabelled_csv_rows(tmp_path):
    """A CSV's negative integer label means no class too; messages name the CSV."""
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,split\n" + "a.png,1,train\n" * 3 + "a.png,-1,train\na.png,-1,test\n")
    with pytest.raises(DataError, match=f"^{csv} gives none of the 1 test images a class"):
        labelled_splits(open_csv(csv))
    csv.write_text("path,label,split\n" + "a.png,1,train\n" * 3 + "a.png,-1,train\n")
    with pytest.raises(DataError, match=rf"3 training images \(1 more have no class in {csv}\), fewer than "
                                        "one batch of 16"):
        train_classifier(open_csv(csv), **KW)
