"""VLM concept matrices with a tiny random-weight open_clip model (both towers)."""

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from clip_fixture import register_tiny_clip
from nexplain.data.images import ImageTable
from nexplain.errors import DataError
from nexplain.linear.conceptmatrix import read_matrix, write_matrix
from nexplain.models.load import load_clip
from nexplain.vlm.vlm import (cached_text_embeddings, calibrate, concept_matrix, image_embeddings, matched_labels,
                              read_concept_set, read_embeddings, text_embeddings, vlm_matrix, write_embeddings)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("vlm")
    register_tiny_clip(d, "nexplain-vlm-tiny", vocab_size=49408)  # the bundled tokenizer's vocabulary
    torch.manual_seed(0)
    full = open_clip.create_model("nexplain-vlm-tiny")
    torch.save(full.state_dict(), d / "tiny.pt")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        p = d / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    table = ImageTable(root=d, paths=paths, splits=None, labels=None, class_names=None, meta={})
    return d, full.eval(), table


def test_embeddings_from_a_local_checkpoint_and_cache(clip, tmp_path):
    d, full, table = clip
    model, preprocess, tok = load_clip({"name": "nexplain-vlm-tiny", "pretrained": str(d / "tiny.pt")})
    ids, emb = image_embeddings(model, preprocess, table, batch_size=4, progress=False)
    assert ids.tolist() == list(range(6)) and emb.shape == (6, 32)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(p)) for p in table.paths])
        want = full.encode_image(x)
    assert np.allclose(emb, (want / want.norm(dim=-1, keepdim=True)).numpy(), atol=1e-5)
    txt = text_embeddings(model, tok, ["red", "water_scene"], template="a photo of {}")
    assert txt.shape == (2, 32)
    write_embeddings(tmp_path / "e.parquet", ids, emb, {"model": "nexplain-vlm-tiny"})
    ids2, emb2, meta = read_embeddings(tmp_path / "e.parquet")
    assert (ids2 == ids).all() and np.array_equal(emb2, emb) and meta["model"] == "nexplain-vlm-tiny"
    P = vlm_matrix(emb, txt, 60.0, -0.09)
    cos = emb.astype(np.float64) @ txt.T.astype(np.float64)
    assert np.allclose(P, 1 / (1 + np.exp(-60 * (cos - 0.09))), atol=1e-6)


def test_calibration_recovers_a_known_sigmoid():
    rng = np.random.default_rng(1)
    cos = rng.uniform(-0.2, 0.4, (4000, 3))
    labels = rng.random(cos.shape) < 1 / (1 + np.exp(-30 * (cos - 0.1)))
    a, b = calibrate(cos, labels)
    assert a == pytest.approx(30, rel=0.15) and b == pytest.approx(-0.1, abs=0.01)
    with pytest.raises(DataError, match="positives"):
        calibrate(cos, np.zeros_like(cos))


def test_concept_sets_and_matching(tmp_path):
    (tmp_path / "set.txt").write_text("# colours\nred\n\nWater scene\nstriped\n")
    names = read_concept_set(tmp_path / "set.txt")
    assert names == ["red", "Water scene", "striped"]
    assert matched_labels(names, ["water_scene", "red", "blue"]) == [(0, 1), (1, 0)]
    (tmp_path / "dup.txt").write_text("red\nred\n")
    with pytest.raises(DataError, match="twice"):
        read_concept_set(tmp_path / "dup.txt")


def test_text_cache_and_calibrated_matrix(clip, tmp_path, monkeypatch):
    d, full, table = clip
    model, preprocess, tok = load_clip({"name": "nexplain-vlm-tiny", "pretrained": str(d / "tiny.pt")})
    meta = {"model": "nexplain-vlm-tiny", "template": "{}"}
    first = cached_text_embeddings(tmp_path / "t.parquet", model, tok, ["red", "blue"], "{}", meta)
    import nexplain.vlm.vlm as vlm
    calls = []
    monkeypatch.setattr(vlm, "text_embeddings", lambda m, t, cs, tpl: calls.append(cs) or text_embeddings(m, t, cs, tpl))
    again = cached_text_embeddings(tmp_path / "t.parquet", model, tok, ["blue", "red", "sky"], "{}", meta)
    assert calls == [["sky"]]  # only the new concept is encoded
    assert np.allclose(again[:2], first[::-1], atol=1e-6)
    # a calibrated matrix: labels follow a known sigmoid of the similarities
    rng = np.random.default_rng(0)
    img = rng.normal(size=(400, 8))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt = rng.normal(size=(3, 8))
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    cos = img @ txt.T
    labels = rng.random((400, 2)) < 1 / (1 + np.exp(-20 * (cos[:, :2] - 0.1)))
    df, meta = concept_matrix(np.arange(400), img, ["sky", "grass", "striped"], txt, np.arange(400),
                              labels, ["Sky", "grass"])
    cal = meta["calibration"]
    assert cal["labelled_concepts"] == ["sky", "grass"] and cal["images"] == 400
    assert cal["a"] == pytest.approx(20, rel=0.25) and cal["b"] == pytest.approx(-0.1, abs=0.03)
    write_matrix(df, tmp_path / "vlm.parquet", meta)
    ids, P, names, back = read_matrix(tmp_path / "vlm.parquet")
    assert names == ["sky", "grass", "striped"] and back["calibration"]["a"] == cal["a"]  # stored with the matrix
    assert np.allclose(P, vlm_matrix(img, txt, cal["a"], cal["b"]), atol=1e-6)
    with pytest.raises(DataError, match="no concept of the set is labelled"):
        concept_matrix(np.arange(400), img, ["zebra"], txt[:1], np.arange(400), labels, ["sky", "grass"])
