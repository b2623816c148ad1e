"""Training the world's VLMs with open_clip: loss, targets, checkpoints that load as pretrained."""

import logging

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch

from clip_fixture import register_tiny_clip
from nexplain.errors import ConfigError
from nexplain.models.clip import (TrainSettings, _Texts, dihedral, encode_text, new_model, register_configs,
                                  save_checkpoint, train_clip)
from nexplain.models.load import load_clip
from nexplain.vlm.vlm import concept_matrix, fit_calibration, text_embeddings, zero_shot_auc

COLORS = {"red": (1.0, -1.0, -1.0), "blue": (-1.0, -1.0, 1.0), "green": (-1.0, 1.0, -1.0)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return register_tiny_clip(tmp_path_factory.mktemp("clip"), "nexplain-train-tiny", vocab_size=49408)


def _toy(n=48, seed=0):
    """Images that are one flat colour plus noise; captions and prompts name the colour."""
    rng = np.random.default_rng(seed)
    names = list(COLORS)
    which = rng.integers(0, 3, n)
    x = torch.tensor(np.array([COLORS[names[k]] for k in which]), dtype=torch.float32)[:, :, None, None]
    images = x.expand(n, 3, 32, 32) + 0.3 * torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    table = pd.DataFrame({"image_id": np.arange(n),
                          "captions": [[f"a {names[k]} picture", f"something {names[k]}"] for k in which],
                          "concepts": [[names[k]] for k in which],
                          "prompts": [[names[k]] for k in which]})
    return images, table, names


def _train(tiny, loss):
    images, table, names = _toy()
    model, _ = new_model(tiny, 0)
    settings = TrainSettings(loss=loss, epochs=12, batch_size=16, lr=3e-3, warmup=0.1, seed=0)
    model, losses = train_clip(model, tiny, images, table, names, settings, progress=False)
    return model, losses, images, table, names


@pytest.fixture(scope="module")
def siglip(tiny):
    return _train(tiny, "siglip")


def test_a_short_training_run_lowers_the_loss(tiny, siglip):
    for model, losses, *_ in (siglip, _train(tiny, "clip")):
        assert len(losses) == 12 * 3
        assert np.mean(losses[-6:]) < 0.7 * np.mean(losses[:6])
        assert not model.training


def test_training_is_reproducible(tiny, siglip):
    again, losses, *_ = _train(tiny, "siglip")
    assert losses == siglip[1]
    first = siglip[0].state_dict()
    assert all(torch.equal(v, first[k]) for k, v in again.state_dict().items())


def test_calibrated_p_is_higher_for_present_concepts(tiny, siglip):
    model, _, images, table, names = siglip
    with torch.no_grad():
        img = model.encode_image(images, normalize=True).numpy()
    txt = text_embeddings(model, open_clip.get_tokenizer(tiny), names)
    present = np.array([[c in row for c in names] for row in table["concepts"]], float)
    ids = np.arange(len(images))
    auc = zero_shot_auc(ids, img, names, txt, ids, present, names)
    assert auc["concept"].tolist() == names and (auc["auc"] > 0.9).all()
    cal = fit_calibration(ids, img, names, txt, ids[:32], present[:32], names)  # fitted on 32, used on all
    assert cal["a"] > 0 and cal["images"] == 32
    df, meta = concept_matrix(ids, img, names, txt, ids, present, names, calibration=cal)
    assert meta["calibration"] is cal  # a stored calibration is used as is
    P = df[names].to_numpy()
    assert P[present > 0].mean() > P[present == 0].mean() + 0.3
    assert ((P * present).sum(1) > (P * (1 - present)).max(1)).mean() >= 0.9  # per image: its colour wins


def test_prompt_targets_mark_every_image_holding_the_concept(tiny):
    _, table, names = _toy(8)
    texts = _Texts(table, open_clip.get_tokenizer(tiny), names)
    rows = np.arange(8)
    tokens, targets = texts.draw(np.random.default_rng(0), rows, prompt_share=1.0)
    colour = np.array([c[0] for c in table["concepts"]])
    expected = np.where(colour[:, None] == colour[None, :], 1.0, -1.0)  # every text is a prompt
    assert tokens.shape[0] == 8 and np.array_equal(targets.numpy(), expected)
    _, targets = texts.draw(np.random.default_rng(0), rows, prompt_share=0.0)
    assert np.array_equal(targets.numpy(), np.where(np.eye(8, dtype=bool), 1.0, -1.0))  # captions: own image


def test_checkpoint_loads_through_the_pretrained_path_with_identical_embeddings(tiny, tmp_path):
    images, table, names = _toy(16)
    model, _ = new_model(tiny, 3)
    model, _ = train_clip(model, tiny, images, table, names, TrainSettings(epochs=1, batch_size=8), progress=False)
    path = tmp_path / "open_clip_model.safetensors"
    save_checkpoint(model, path)
    loaded, preprocess, tokenizer = load_clip({"name": tiny, "pretrained": str(path)})
    same, _, _ = open_clip.create_model_and_transforms(tiny, pretrained=str(path))  # open_clip's own call
    tok = tokenizer(["red", "a blue picture"])
    with torch.no_grad():
        for m in (loaded, same.eval()):
            assert torch.equal(m.encode_image(images[:4]), model.encode_image(images[:4]))
            assert torch.equal(m.encode_text(tok), model.encode_text(tok))
    save_checkpoint(model, tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == path.read_bytes()  # same weights, same bytes


def test_shipped_configs_are_registered_and_build():
    names = register_configs()
    assert names == ["nexplain-world-cnn", "nexplain-world-rn", "nexplain-world-vit"]
    for name in names:
        assert open_clip.get_model_config(name)["text_cfg"]["vocab_size"] == 49408  # the bundled tokenizer


def test_a_model_trained_here_is_built_without_the_no_weights_warning(tiny, caplog):
    """open_clip warns that no weights were loaded; none were asked for. Other warnings stay."""
    with caplog.at_level(logging.WARNING):
        new_model(tiny, 0)
        logging.warning("No pretrained weights loaded: a message of ours still shows")
    assert [r.getMessage() for r in caplog.records] == [
        "No pretrained weights loaded: a message of ours still shows"]


def test_settings_reject_unknown_keys_and_losses():
    with pytest.raises(ConfigError, match="unknown keys \\['epoch'\\]"):
        TrainSettings.from_config({"epoch": 3})
    with pytest.raises(ConfigError, match="valid choices are siglip, clip"):
        TrainSettings.from_config({"loss": "hinge"})
    with pytest.raises(ConfigError, match="precision 'fp16': valid choices are fp32, bf16, auto"):
        TrainSettings.from_config({"precision": "fp16"})
    with pytest.raises(ConfigError, match="crops needs loss: siglip with concept_texts: true"):
        TrainSettings.from_config({"crops": 8, "loss": "clip"})


def test_dihedral_views_are_turns_and_mirrors_of_each_image():
    x = torch.arange(6 * 3 * 4 * 4, dtype=torch.float32).reshape(6, 3, 4, 4)
    out = dihedral(x, np.random.default_rng(0))
    views = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    views += [v.flip(-1) for v in views]
    seen = set()
    for i in range(len(x)):
        match = [j for j, v in enumerate(views) if torch.equal(out[i], v[i])]
        assert len(match) == 1  # exactly one of the 8 views of image i, never another image
        seen.add(match[0])
    assert len(seen) > 1 and torch.equal(out, dihedral(x, np.random.default_rng(0)))


def test_bf16_training_runs_and_lowers_the_loss(tiny):
    images, table, names = _toy()
    model, _ = new_model(tiny, 0)
    settings = TrainSettings(epochs=12, batch_size=16, lr=3e-3, precision="bf16", seed=0)
    model, losses = train_clip(model, tiny, images, table, names, settings, progress=False)
    assert np.mean(losses[-6:]) < 0.7 * np.mean(losses[:6])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 weights


def _toy_crops(table, centre):
    """One crop per toy image, centred at (centre, centre), naming the image's colour."""
    return pd.DataFrame({"row": np.arange(len(table)), "cy": centre, "cx": centre, "concepts": table["concepts"]})


def test_crop_training_draws_jittered_crops_and_lowers_the_loss():
    images, table, names = _toy()
    model, _ = new_model("nexplain-world-cnn", 0)
    small = torch.nn.functional.interpolate(images, size=112)  # the world CNN's input size
    crops = _toy_crops(table, 56.0)
    settings = TrainSettings(epochs=8, batch_size=16, lr=3e-3, crops=8, crop_size=48, seed=0)
    model, losses = train_clip(model, "nexplain-world-cnn", small, table, names, settings, progress=False,
                               crops=crops)
    assert np.mean(losses[-6:]) < 0.7 * np.mean(losses[:6])
    again, losses2 = train_clip(new_model("nexplain-world-cnn", 0)[0], "nexplain-world-cnn", small, table, names,
                                settings, progress=False, crops=crops)
    assert losses2 == losses  # crops are seeded too


def test_crops_need_crops_and_a_size_agnostic_tower(tiny):
    images, table, names = _toy(16)
    settings = TrainSettings(epochs=1, batch_size=8, crops=4, crop_size=16)
    with pytest.raises(ConfigError, match="no object crops were given"):
        train_clip(new_model(tiny, 0)[0], tiny, images, table, names, settings, progress=False)
    with pytest.raises(ConfigError, match="does not take 16 px crops"):  # the tiny ViT's fixed 4 x 4 patches
        train_clip(new_model(tiny, 0)[0], tiny, images, table, names, settings, progress=False,
                   crops=_toy_crops(table, 16.0))


@pytest.mark.parametrize("name", ["nexplain-world-cnn", "nexplain-world-vit"])
def test_text_encoding_up_to_the_longest_text_equals_open_clips(name):
    model, _ = new_model(name, 2)
    tokens = open_clip.get_tokenizer(name)(["red", "a striped star", "a photo of a red circle and a blue cross on sand"])
    with torch.no_grad():
        short = encode_text(model, tokens[:2])  # 4 of 32 positions
        assert torch.allclose(short, model.encode_text(tokens[:2], normalize=True), atol=1e-6)
        assert torch.allclose(encode_text(model, tokens), model.encode_text(tokens, normalize=True), atol=1e-6)
        assert not torch.allclose(short[0], short[1], atol=1e-3)  # the texts differ, so does the check


def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively(monkeypatch, caplog):
    from nexplain.models import clip

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert clip.resolve_precision("auto", "cpu") == "fp32"  # an AVX2 CPU emulates bf16, ~10x slower
    with caplog.at_level(logging.WARNING):
        assert clip.resolve_precision("bf16", "cpu") == "bf16"  # asked for: kept, with a warning
    assert "no native bfloat16" in caplog.text
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert clip.resolve_precision("auto", "cpu") == "bf16" and clip.resolve_precision("fp32", "cpu") == "fp32"
