"""`import nexplain as nx`: every method on in-memory arrays, with shapes checked first."""

import numpy as np
import pandas as pd
import pytest

import nexplain as nx
from nexplain.errors import DataError

N, S = 60, 8


@pytest.fixture(scope="module")
def masks():
    """Three concepts on N images of S x S: left half, top half, a centre square (every 3rd image)."""
    m = np.zeros((3, N, S, S), bool)
    rng = np.random.default_rng(0)
    on = rng.random((3, N)) < 0.5
    m[0][on[0], :, :S // 2] = True
    m[1][on[1], :S // 2, :] = True
    m[2][::3, 2:6, 2:6] = True
    return m


@pytest.fixture(scope="module")
def maps(masks):
    """Four units: concept 0, concept 0 OR concept 2, constant (dead), and concept 1 scaled."""
    rng = np.random.default_rng(1)
    noise = 0.01 * rng.random((N, S, S))
    units = [masks[0] + noise, (masks[0] | masks[2]) + noise, np.full((N, S, S), 0.3), 2.0 * masks[1] + noise]
    return np.stack(units, axis=1).astype(np.float32)  # (N, U, S, S)


NAMES = ["left", "top", "centre"]


def test_netdissect_labels_each_unit_with_its_planted_concept(maps, masks):
    t = nx.netdissect(maps, masks, NAMES, quantile=0.77)  # top 23% of cells: concept 0 covers 23.3%
    by = t.set_index("unit")
    assert by.loc[0, "formula"] == "left" and by.loc[3, "formula"] == "top"
    assert by.loc[2, "status"] == "dead" and by.loc[0, "iou"] > 0.9


def test_coex_finds_the_planted_disjunction(maps, masks):
    t = nx.coex(maps, nx.concept_store(masks), NAMES, length=2, quantile=0.7, units=[1])  # covers 29.8%
    assert t["unit"].tolist() == [1]
    assert t.loc[0, "formula"] in ("left OR centre", "centre OR left")
    assert t.loc[0, "iou"] > 0.9


def test_clustered_gives_ranges_and_a_dead_row(maps, masks):
    t = nx.clustered(maps, masks, NAMES, k=2, units="2-3")
    assert (t[t["unit"] == 2]["status"] == "dead").all() and len(t[t["unit"] == 3]) == 2
    top = t[t["unit"] == 3].sort_values("lo").iloc[-1]
    assert top["formula"] == "top" and top["iou"] > 0.9


def test_formula_calls_check_shapes(maps, masks):
    with pytest.raises(DataError, match=r"maps: need \(images, units, h, w\) with 60 images"):
        nx.netdissect(maps[:10], masks, NAMES)
    with pytest.raises(DataError, match="names: 2 names for the 3 concepts"):
        nx.netdissect(maps, masks, NAMES[:2])
    with pytest.raises(DataError, match=r"masks: need \(concepts, images, height, width\)"):
        nx.concept_store(masks[0])


@pytest.fixture(scope="module")
def pq_world():
    """P (N, 4) concept scores, Q (N, 3) units: unit 0 = 2 P0 + P1, unit 1 = P2, unit 2 dead."""
    rng = np.random.default_rng(0)
    n = 400
    P = rng.random((n, 4)).astype(np.float32)
    Q = np.column_stack([2 * P[:, 0] + P[:, 1], P[:, 2], np.zeros(n)]) + 0.01 * rng.random((n, 3))
    Q[:, 2] = 0.0
    splits = np.array(["train"] * 280 + ["val"] * 40 + ["test"] * 80)
    return P, Q, splits, ["a", "b", "c", "d"]


def test_linear_recovers_planted_weights(pq_world):
    P, Q, splits, names = pq_world
    t = nx.linear(P, Q, splits, names, lam=0.001)
    u0 = dict(zip(t.loc[0, "concepts"], t.loc[0, "weights"]))
    assert set(u0) == {"a", "b"} and u0["a"] == pytest.approx(2, rel=0.05) and u0["b"] == pytest.approx(1, rel=0.05)
    assert t.loc[1, "concepts"] == ["c"] and t.loc[0, "val_corr"] > 0.99
    assert bool(t.loc[2, "dead"]) and np.isnan(t.loc[2, "val_corr"])


def test_linear_splits_and_filter_errors_name_the_cause(pq_world):
    P, Q, splits, names = pq_world
    masks = {s: splits == s for s in ("train", "val", "test")}
    assert nx.linear(P, Q, masks, names).equals(nx.linear(P, Q, splits, names))
    with pytest.raises(DataError, match="splits: missing val"):
        nx.linear(P, Q, {"train": masks["train"]}, names)
    with pytest.raises(DataError, match=r"P \(images, concepts\) and Q \(images, units\) need the same images"):
        nx.linear(P[:10], Q, splits, names)
    with pytest.raises(DataError, match="none of its 4 concepts passes"):
        nx.linear(P * 0.1, Q, splits, names)
    low = nx.linear(P * 0.1, Q, splits, names, concept_filter=nx.ConceptFilter(top=5, min_mean=0.05))
    assert low.loc[1, "concepts"] == ["c"]


def test_simulate_scores_linear_and_formula_tables(pq_world, maps, masks):
    P, Q, splits, names = pq_world
    scores = nx.simulate(nx.linear(P, Q, splits, names), P, names, Q, splits)
    assert scores["explainer"].unique().tolist() == ["le"] and scores.loc[0, "corr_test"] > 0.99
    assert np.isnan(scores.loc[2, "corr_test"])
    formulas = pd.DataFrame({"unit": [0, 1], "cluster": [0, 0], "status": ["ok", "ok"],
                             "formula": ["a", "(c OR d)"]})
    f = nx.simulate(formulas, P, names, Q, splits, method="coex")
    assert f["explainer"].tolist() == ["coex", "coex"] and 0.5 < f.loc[0, "corr_test"] < 0.99


def test_pure_separates_the_circuits_the_reference_sees(tmp_path):
    rng = np.random.default_rng(0)
    U, M = 2, 20
    kind = np.tile(np.repeat([0, 1], M // 2), (U, 1))           # two kinds of top image per unit
    reference = kind[..., None] * 5.0 + rng.normal(0, 0.1, (U, M, 3))
    good = kind[..., None] * 3.0 + rng.normal(0, 0.1, (U, M, 4))  # relevances that follow the kinds
    noise = rng.normal(0, 1, (U, M, 4))                           # and some that do not
    circuits, corr, summary = nx.pure({"good": good, "noise": noise}, reference, k=2)
    by = summary.set_index("layer")["corr_mean"]
    assert by["good"] > 0.9 and abs(by["noise"]) < 0.3
    c = circuits[(circuits["unit"] == 0) & (circuits["layer"] == "good")]
    assert len(set(zip(c["cluster"], kind[0][c["image"]]))) == 2  # the circuits are the two kinds
    with pytest.raises(DataError, match=r"reference: need \(2, 20, dims\)"):
        nx.pure({"good": good}, reference[:, :5])


@pytest.mark.parametrize("first", ["api", "modules"])
def test_method_packages_stay_api_calls_in_any_import_order(first):
    """Importing `nexplain.linear.linear` binds the package `nexplain.linear` to nx.linear (same for
    pure); in a fresh interpreter, before or after those imports, the names still run the API."""
    import subprocess
    import sys

    code = """
import sys
import nexplain as nx
from nexplain.errors import DataError
if sys.argv[1] == "modules":
    import nexplain.linear.linear, nexplain.linear.simulate, nexplain.pure.pure
calls = [(nx.linear, ([[0.0]], [[0.0], [1.0]], None)), (nx.pure, ({}, None)),
         (nx.simulate, (None, [[0.0]], None, [[0.0], [1.0]], None))]
import nexplain.linear.linear, nexplain.linear.simulate, nexplain.pure.pure
assert nx.linear is sys.modules["nexplain.linear"] and nx.pure is sys.modules["nexplain.pure"]
for call, args in calls + [(nx.linear, calls[0][1]), (nx.pure, calls[1][1]), (nx.simulate, calls[2][1])]:
    try:
        call(*args)
    except DataError:  # the API's own shape check: the call reached nexplain.api
        continue
    raise AssertionError(call)
"""
    subprocess.run([sys.executable, "-c", code, first], check=True)


def test_the_api_tour_example_runs_and_finds_its_planted_answers(capsys):
    """examples/api_tour.py, the notebook-style tour the README points to, runs as written."""
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).parents[1] / "examples" / "api_tour.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "sky OR water" in out and "[sky, grass]" in out and "layer2" in out
