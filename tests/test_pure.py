"""PURE circuits and the distance-correlation evaluation, on hand examples."""

import numpy as np
import pandas as pd
import pytest

from nexplain.pure.pure import circuit_concepts, circuits, distance_correlation, evaluate, summary


def test_distance_correlation_by_hand():
    # distances (1, 3, 2) against (1, 2, 1): r = 1 / sqrt(2 * 2/3) = 0.8660
    assert distance_correlation([[0.0], [1.0], [3.0]], [[0.0], [1.0], [2.0]]) == pytest.approx(0.8660254, abs=1e-7)
    assert distance_correlation([[0.0], [1.0], [3.0]], [[0.0], [2.0], [6.0]]) == pytest.approx(1.0)
    assert np.isnan(distance_correlation(np.zeros((4, 2)), np.eye(4)))  # constant: undefined
    with pytest.raises(ValueError, match="3 rows against 2"):
        distance_correlation(np.zeros((3, 1)), np.zeros((2, 1)))


def test_circuits_checks_k_and_handles_too_few_distinct_rows():
    R = np.array([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    labels = circuits(R, 2, 0)
    assert labels[0] == labels[1] != labels[2] == labels[3]
    assert circuits(np.zeros((5, 3)), 2).tolist() == [0] * 5
    with pytest.raises(ValueError, match="2..5"):
        circuits(R, 6)


def test_evaluate_and_summary_on_a_small_case():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(8, 3))
    own = rng.normal(size=(8, 4))
    top = np.array([[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]])
    pairs = [(u, int(i)) for u, row in zip((7, 9), top) for i in row]
    rows = {p: r for r, p in enumerate(pairs)}
    good = np.stack([ref[i] for _, i in pairs])  # relevance that is the reference itself
    dead = np.zeros((len(pairs), 2))
    clusters, scores = evaluate(np.array([7, 9]), top, {"l1": dead, "l2": good}, rows, ref, None, own, k=2)
    assert len(clusters) == 2 * 2 * 5 and set(clusters["cluster"]) <= {0, 1}
    s = scores.set_index(["unit", "layer"])
    assert s.loc[(7, "l2"), "corr"] == pytest.approx(1.0) and s.loc[(9, "l2"), "corr"] == pytest.approx(1.0)
    assert s.loc[(7, "l1"), "dead"] and np.isnan(s.loc[(7, "l1"), "corr"])
    assert s.loc[(7, "l2"), "baseline"] == pytest.approx(distance_correlation(own[top[0]], ref[top[0]]))
    table = summary(scores)
    assert table["layer"].tolist() == ["l2"] and table["corr_mean"].iloc[0] == pytest.approx(1.0)
    assert table["units"].iloc[0] == 2


def test_each_circuit_is_named_by_the_concept_that_overlaps_it_most():
    # unit 3's top images 0-5: circuit 0 = {0, 1, 2} all hold "sky" (image 3 too), circuit 1 = {3, 4, 5}
    # holds "grass" in 4 and 5 only; "dog" is nowhere among them
    clusters = pd.DataFrame({"unit": 3, "layer": "layer3", "image_id": np.arange(6), "cluster": [0, 0, 0, 1, 1, 1]})
    P = np.zeros((8, 3), np.float32)
    P[[0, 1, 2, 3], 0] = 0.9          # sky
    P[[4, 5], 1] = 0.7                # grass
    P[[6, 7], 2] = 1.0                # dog, outside the top images
    got = circuit_concepts(clusters, P, ["sky", "grass", "dog"]).set_index("cluster")
    assert got.loc[0, "concept"] == "sky" and got.loc[0, "iou"] == pytest.approx(3 / 4)
    assert got.loc[1, "concept"] == "grass" and got.loc[1, "iou"] == pytest.approx(2 / 3)
    assert got["size"].tolist() == [3, 3]
    none = circuit_concepts(clusters, np.zeros((8, 3)), ["sky", "grass", "dog"])
    assert none["concept"].isna().all() and (none["iou"] == 0).all()  # nothing touches them: no name
