"""NeuronEval's passing metrics: perfect, chance and constant predictions score as they should."""

import numpy as np
import pytest

from nexplain.truth import neuroneval as ne


def _splits(n, seed=0):
    names = np.random.default_rng(seed).choice(["train", "val", "test"], n, p=[0.6, 0.2, 0.2])
    return {k: names == k for k in ("train", "val", "test")}


def test_a_prediction_equal_to_the_unit_scores_one():
    act = np.random.default_rng(0).random(2000) * (np.random.default_rng(1).random(2000) < 0.1)
    s = ne.scores(act, act, _splits(2000), on=act > 0)
    assert s["pearson"] > 0.999 and s["cosine"] > 0.999 and s["auprc"] == 1.0
    assert s["f1"] == 1.0 and s["iou"] == 1.0 and 0.05 < s["base_rate"] < 0.15
    natural = ne.scores(act, act, _splits(2000))  # fires on its top 5% of each split
    assert natural["auprc"] == pytest.approx(1.0) and natural["f1"] == pytest.approx(1.0) and 0.04 < natural["base_rate"] < 0.07


def test_an_unrelated_prediction_scores_near_chance():
    rng = np.random.default_rng(2)
    act = rng.random(4000) * (rng.random(4000) < 0.2)
    s = ne.scores(rng.random(4000), act, _splits(4000), on=act > 0)
    assert abs(s["pearson"]) < 0.08
    assert abs(s["auprc"] - s["base_rate"]) < 0.06  # AUPRC's chance level is the positive share
    assert s["iou"] < 0.25


def test_a_constant_prediction_has_no_correlation_and_fires_nowhere():
    act = np.r_[np.zeros(50), np.ones(50)]
    assert ne.pearson(np.ones(100), act) == 0.0
    assert not ne.top(np.ones(100), 0.1).any()
    s = ne.scores(np.ones(100), act, {"val": np.arange(100) % 2 == 0, "test": np.arange(100) % 2 == 1}, on=act > 0)
    assert s["pearson"] == 0.0 and s["f1"] == 0.0 and s["auprc"] == s["base_rate"] == 0.5
    assert ne.cosine(np.zeros(3), np.ones(3)) == 0.0


def test_alpha_is_tuned_on_val_to_the_share_where_the_unit_fires():
    act = np.r_[np.ones(20), np.zeros(180)]  # fires on 10%
    pred = act + 0.01 * np.random.default_rng(3).random(200)
    assert ne.tune_alpha(pred, act > 0) == 0.1
    assert ne.f1_iou(np.array([1, 1, 0], bool), np.array([1, 0, 0], bool)) == (2 / 3, 0.5)
