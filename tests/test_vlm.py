"""VLM concept matrices with a tiny random-weight open_clip model (both towers)."""

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from nexplain.data.images import ImageTable
from nexplain.errors import DataError
from nexplain.models.load import load_clip
from nexplain.vlm import (calibrate, image_embeddings, matched_labels, read_concept_set, read_embeddings,
                          text_embeddings, vlm_matrix, write_embeddings)

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("vlm")
    (d / "nexplain-vlm-tiny.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(d / "nexplain-vlm-tiny.json")
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
    assert ids.tolist() == list(range(6)) and emb.shape == (6, 16)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(p)) for p in table.paths])
        want = full.encode_image(x)
    assert np.allclose(emb, (want / want.norm(dim=-1, keepdim=True)).numpy(), atol=1e-5)
    txt = text_embeddings(model, tok, ["red", "water_scene"], template="a photo of {}")
    assert txt.shape == (2, 16)
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
