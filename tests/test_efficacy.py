"""Causal efficacy and copy-paste flips with a model whose units are known functions of the pixels."""

import numpy as np
import pandas as pd
import pytest
import torch

from nexplain.causal.adversarial import flip_table, paste_concepts
from nexplain.causal.edits import WorldSpecs, image_of
from nexplain.causal.efficacy import concept_effects, explanation_efficacy, planted_efficacy, random_baseline
from nexplain.data.world import generate_world

class Colours(torch.nn.Module):
    """layer: unit 0 = how red each pixel is, unit 1 = 0 (dead), unit 2 = how blue; head: 2 classes
    (class 1 = much red)."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Identity()

    def forward(self, x):
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        red = torch.relu(r - 0.7) * torch.relu(0.3 - g) * torch.relu(0.3 - b) * 100
        blue = torch.relu(b - 0.7) * torch.relu(0.35 - g) * torch.relu(0.35 - r) * 100
        maps = self.layer(torch.stack([red, torch.zeros_like(red), blue], 1))
        score = maps[:, 0].mean((1, 2))
        return torch.stack([0.02 - score, score - 0.02], 1)


def prepare(images):
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal") / "w"
    generate_world(root, n_images=40, image_size=48, mask_size=24, seed=2, progress=False)
    return WorldSpecs(root)


def test_rendering_a_concept_in_moves_the_unit_that_computes_it(world):
    effects, sd = concept_effects(Colours(), prepare, "layer", world, np.arange(12), ["red", "blue", "border", "snow"])
    assert list(effects.index) == ["red", "blue", "snow"]  # border cannot be toggled alone
    assert effects.at["red", 0] > 1.0 and abs(effects.at["blue", 0]) < 0.5 * effects.at["red", 0]
    assert effects.at["blue", 2] > 1.0
    assert np.isnan(effects.at["red", 1]) and sd[1] == 0  # the dead unit


def test_explanations_are_scored_by_their_signed_concepts(world):
    effects, _ = concept_effects(Colours(), prepare, "layer", world, np.arange(12), ["red", "blue", "green"])
    names = ["red", "blue", "green", "border"]
    table = pd.DataFrame({"unit": [0, 0, 2, 1], "cluster": 0, "status": ["ok", "ok", "ok", "ok"],
                          "formula": ["red", "green AND NOT red", "blue OR border", "red"]})
    e = explanation_efficacy("coex", "formula", table.iloc[[0, 2, 3]], effects, names)
    assert e["moved"].tolist() == [True, True, False] and np.isnan(e["effect"].iloc[2])
    assert e["concepts"].iloc[1] == ["blue"]  # border is named but not renderable
    wrong = explanation_efficacy("coex", "formula", table.iloc[[1]], effects, names)
    assert wrong["effect"].iloc[0] < 0 and not wrong["moved"].iloc[0]  # NOT red: red raises the unit
    linear = pd.DataFrame({"unit": [0], "concepts": [["red", "blue"]], "weights": [[0.8, -0.1]], "dead": [False]})
    assert explanation_efficacy("le", "linear", linear, effects, names)["signs"].iloc[0] == [1.0, -1.0]
    base = random_baseline(e, effects, seed=0)
    assert base["method"].iloc[0] == "random" and base["n_concepts"].tolist() == e["n_concepts"].tolist()


def test_planted_units_are_scored_by_their_own_concepts(world):
    from nexplain.truth.planted import Planted
    effects, _ = concept_effects(Colours(), prepare, "layer", world, np.arange(12), ["red", "blue"])
    units = [Planted("layer", 0, "single", "red"), Planted("layer", 2, "formula", "blue AND NOT red")]
    t = planted_efficacy(units, {"layer": effects}, ["red", "blue"])
    assert t["moved"].tolist() == [True, True] and t["n_concepts"].tolist() == [1, 2]


def test_pasting_the_explained_concept_flips_more_than_pasting_a_random_one(world):
    weights = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # class 1 reads unit 0, class 0 unit 2
    # one concept per kind, most frequent first: red and green are both colours
    assert paste_concepts(weights, 1, {0: ["red", "circle", "green", "border"]}, units=1) == ["circle", "green"]
    assert paste_concepts(weights, 0, {2: ["blue"]}, units=1) == ["blue"]
    ids = np.arange(40)
    pred = Colours()(prepare([image_of(world.spec(i)) for i in ids])).argmax(1).numpy()  # it is always right
    table, gallery = flip_table(Colours(), prepare, world, weights, {0: ["red"], 2: ["blue"]}, ids, pred,
                                units=1, images=10, seed=0)
    row = table.set_index("class").loc[1]
    assert row["concepts"] == ["red"] and row["images"] > 0
    assert row["flip_explained"] > row["flip_random"]
    assert len(gallery) >= 1 and gallery[0][1].shape == (48, 48, 3)
