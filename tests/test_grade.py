"""Grades against planted truth: exact recovery by equivalence on the masks, set scores, sanity rows."""

import numpy as np
import pandas as pd
import pytest

import nexplain as nx
from nexplain.truth.grade import UnitTruth, adjusted_rand, grade_unit, planting_check, set_scores, summarise
from nexplain.truth.planted import parse_units, planted_cells
from truth_store import NAMES, make_store, splits


@pytest.fixture(scope="module")
def world():
    store, masks = make_store()
    presence = masks.any((2, 3)).T.astype(np.float32)  # (N, C): the label matrix
    return store, masks, splits(), {"label": (presence, NAMES)}


def unit(world, **kw):
    store, _, sp, _ = world
    [p] = parse_units([{"layer": "layer3", "unit": 0, **kw}], NAMES)
    return UnitTruth(p, store, NAMES, sp["test"])


def formula_rows(*formulas):
    return pd.DataFrame([{"status": "ok", "formula": f, "lo": 0.0, "hi": 1.0} for f in formulas])


def test_an_equivalent_formula_is_recovered_and_a_partial_one_is_not(world):
    t = unit(world, kind="formula", formula="red AND circle")
    same = grade_unit(t, "coex", formula_rows("circle AND red"), world[2], world[3])
    assert same["recovered"] == 1.0 and same["set_f1"] == 1.0 and same["mask_iou"] == 1.0
    assert same["pearson"] > 0.999 and same["auprc"] == 1.0
    part = grade_unit(t, "netdissect", formula_rows("red"), world[2], world[3])
    assert part["recovered"] == 0.0 and part["set_precision"] == 1.0 and part["set_recall"] == 0.5
    assert 0.3 < part["mask_iou"] < 0.7
    # on these masks an object is one colour: red AND circle AND NOT blue holds on the same cells
    longer = grade_unit(t, "coex", formula_rows("(red AND circle) AND NOT blue"), world[2], world[3])
    assert longer["recovered"] == 1.0 and longer["set_precision"] == pytest.approx(2 / 3)


def test_the_methods_recover_a_planted_unit_and_shuffled_maps_score_near_chance(world):
    store, masks, sp, mats = world
    t = unit(world, kind="formula", formula="red AND circle")
    maps = (planted_cells(t.p, store, NAMES) + 0.01 * np.random.default_rng(0).random((400, 8, 8)))[:, None]
    q = 1 - t.cells.mean()  # the top region as large as the planted one
    found = nx.coex(maps.astype(np.float32), store, NAMES, length=2, quantile=q)
    g = grade_unit(t, "coex", found, sp, mats)
    assert g["recovered"] == 1.0 and g["pearson"] > 0.99
    perm = np.random.default_rng(1).permutation(400)
    shuffled = grade_unit(t, "coex", nx.coex(maps[perm].astype(np.float32), store, NAMES, length=2, quantile=q), sp, mats)
    assert shuffled["recovered"] == 0.0 and abs(shuffled["pearson"]) < 0.2
    assert abs(shuffled["auprc"] - shuffled["base_rate"]) < 0.15
    const = grade_unit(t, "constant", None, sp, mats)
    assert const["recovered"] == 0.0 and const["pearson"] == 0.0 and const["set_f1"] == 0.0
    assert const["auprc"] == pytest.approx(const["base_rate"])


def test_clustered_ranges_are_graded_against_the_planted_levels(world):
    store, masks, sp, mats = world
    t = unit(world, kind="graded", levels=[{"formula": "red", "level": 1.0}, {"formula": "blue", "level": 0.4}])
    maps = planted_cells(t.p, store, NAMES)[:, None]
    found = nx.clustered(maps, store, NAMES, k=2, length=1)
    g = grade_unit(t, "clustered", found, sp, mats, maps[:, 0])
    assert g["range_recovery"] == 1.0 and g["recovered"] == 1.0 and g["set_f1"] == 1.0
    swapped = found.copy()
    swapped["formula"] = swapped["formula"].map({"red": "blue", "blue": "red"})
    assert grade_unit(t, "clustered", swapped, sp, mats, maps[:, 0])["range_recovery"] == 0.0
    top = grade_unit(t, "netdissect", formula_rows("red"), sp, mats)  # top-quantile methods: the top level
    assert top["recovered"] == 1.0


def test_le_recovers_the_planted_weighted_sum(world):
    store, masks, sp, mats = world
    t = unit(world, kind="linear", weights={"snow": 0.6, "red": 0.3})
    P = mats["label"][0]
    le = nx.linear(P, t.image[:, None], sp, NAMES, concept_filter={"top": 5, "min_mean": 0.5})
    g = grade_unit(t, "le_label", le, sp, mats)
    assert g["recovered"] == 1.0 and g["pearson"] > 0.99, le.loc[0, "concepts"]
    assert np.isnan(grade_unit(t, "coex", formula_rows("snow"), sp, mats)["recovered"])  # no formula is a sum


def test_pure_circuits_are_graded_by_adjusted_rand_index(world):
    t = unit(world, kind="polysemantic", parts=["lava", "snow"])
    images = np.flatnonzero(t.parts >= 0)[:20]
    rows = pd.DataFrame({"image_id": images, "cluster": t.parts[images], "concept": np.array(["lava", "snow"])[t.parts[images]]})
    g = grade_unit(t, "pure", rows, world[2], world[3])
    assert g["ari"] == 1.0 and g["recovered"] == 1.0
    assert np.isnan(adjusted_rand(rows.assign(cluster=0), t.parts))  # one circuit: nothing to compare
    assert set_scores(set(), {"a"}) == (0.0, 0.0, 0.0) and set_scores({"a", "b"}, {"a"})[2] == pytest.approx(2 / 3)


def test_planting_check_and_summary(world):
    store, masks, sp, mats = world
    t = unit(world, kind="single", formula="red")
    good = planting_check(t, planted_cells(t.p, store, NAMES)[:, ::2, ::2])  # at a quarter of the resolution
    assert good["passed"] and good["corr"] > 0.99
    noise = planting_check(t, np.random.default_rng(0).random((400, 4, 4)).astype(np.float32))
    assert not noise["passed"] and abs(noise["corr"]) < 0.1
    grades = pd.DataFrame([{"variant": "planted", "method": "coex", "kind": "single", "recovered": 1.0, "seconds": 2.0},
                           {"variant": "planted", "method": "coex", "kind": "formula", "recovered": 0.0, "seconds": 4.0}])
    for c in ("set_precision", "set_recall", "set_f1", "mask_iou", "range_recovery", "ari",
              "pearson", "cosine", "auprc", "f1", "iou", "alpha", "base_rate"):
        grades[c] = 0.5
    s = summarise(grades).set_index("kind")
    assert s.loc["all", "recovered"] == 0.5 and s.loc["all", "units"] == 2 and s.loc["single", "seconds"] == 2.0
