"""The score report: its numbers equal the method tables', its figures are PNGs."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nexplain.errors import DataError
from nexplain.report.range_figures import ranges_figure, top_figure, top_images
from nexplain.report.report import metrics_json, summary_table, unit_table
from nexplain.report.report_figures import (area_chart, area_proportions, corr_vs_ablation, linear_weights, method_bars,
                                            specialization_bars, top_impact_curve)


def _formula(units, iou, status=None):
    n = len(units)
    return pd.DataFrame({"unit": units, "cluster": 0, "status": status or ["ok"] * n, "lo": 0.0, "hi": 1.0,
                         "n_cells": 10, "formula": [f"c{u}" for u in units], "length": [1] * n, "iou": iou,
                         "detection_accuracy": iou, "activation_coverage": 0.5, "sample_coverage": 0.25,
                         "explanation_coverage": 0.75})


@pytest.fixture
def tables():
    formulas = {"netdissect": _formula([0, 1, 2], [0.2, 0.4, 0.0], ["ok", "ok", "dead"]),
                "clustered": pd.concat([_formula([0, 1], [0.1, 0.3]).assign(cluster=0),
                                        _formula([0, 1], [0.5, 0.7]).assign(cluster=1, lo=1.0, hi=2.0)])}
    linear = {"le_label": pd.DataFrame({"unit": [0, 1, 2], "concepts": [["a", "b"], ["c"], []],
                                        "weights": [[0.5, -0.25], [1.0], []], "bias": [0.1, -0.2, 0.0],
                                        "length": [2, 1, 0], "val_corr": [0.9, 0.7, np.nan],
                                        "dead": [False, False, True]})}
    sim = pd.DataFrame({"explainer": ["le_label"] * 3 + ["netdissect"] * 3, "unit": [0, 1, 2] * 2,
                        "dead": [False, False, True, False, False, True],
                        "corr_test": [0.8, 0.6, np.nan, 0.3, np.nan, np.nan],
                        "ablation_optim": [0.5, 0.1, np.nan, 0.2, 0.0, np.nan],
                        "ablation_norm": [0.4, 0.2, np.nan, 0.1, 0.1, np.nan]})
    ti = pd.DataFrame({"unit": [0, 1, 2], "computed": [True, True, False], "dead": [False, False, False],
                       "ti_0.02": [0.1, 0.3, np.nan], "ti_0.5": [0.6, 0.8, np.nan]})
    pure = pd.DataFrame({"layer": ["layer1", "layer3"], "corr_mean": [0.3, 0.4], "corr_std": [0.1, 0.2],
                         "baseline_mean": [0.5, 0.5], "ceiling_mean": [0.8, 0.8], "units": [2, 2]})
    return formulas, linear, {"label": sim}, ti, pure


def test_summary_numbers_equal_the_method_tables(tables):
    formulas, linear, sims, ti, pure = tables
    t = summary_table(formulas, linear, sims, ti, pure).set_index(["section", "method", "simulator", "metric"])
    assert t.loc[("metrics", "netdissect", "", "iou"), "mean"] == pytest.approx(0.3)  # the dead unit is left out
    assert t.loc[("metrics", "netdissect", "", "iou"), "n"] == 2
    assert t.loc[("metrics", "clustered", "", "iou"), "mean"] == pytest.approx(0.4)   # every range counts
    assert t.loc[("metrics", "clustered", "", "iou"), "std"] == pytest.approx(np.std([0.1, 0.3, 0.5, 0.7]))
    assert t.loc[("length", "le_label", "", "length"), "mean"] == pytest.approx(1.5)
    assert t.loc[("simulation", "le_label", "label", "corr_test"), "mean"] == pytest.approx(0.7)
    assert t.loc[("simulation", "netdissect", "label", "corr_test"), "n"] == 1         # NaN: undefined
    assert t.loc[("simulation", "netdissect", "label", "ablation_optim"), "mean"] == pytest.approx(0.1)
    assert t.loc[("top_impact", "top_impact", "", "ti_0.02"), "mean"] == pytest.approx(0.2)
    assert t.loc[("pure", "layer3", "", "corr"), "std"] == pytest.approx(0.2)
    flat = metrics_json(t.reset_index())
    assert flat["simulation.le_label.label.corr_test"] == pytest.approx(0.7)
    assert flat["pure.layer1.ceiling"] == pytest.approx(0.8)


def test_exact_search_adds_the_beam_gap_section(tables):
    formulas, linear, sims, ti, pure = tables
    coex = _formula([0, 1, 2, 3], [0.5, 0.4, 0.3, 0.0], ["ok", "ok", "ok", "dead"]).assign(
        beam_iou=[0.5, 0.2, 0.3, np.nan], gap=[0.0, 0.2, 0.0, np.nan])
    t = summary_table({**formulas, "coex": coex}, linear, sims, ti, pure).set_index(["section", "method", "metric"])
    assert t.loc[("search", "coex", "gap"), "mean"].item() == pytest.approx(0.2 / 3)
    assert t.loc[("search", "coex", "beam_below_optimum"), "mean"].item() == pytest.approx(1 / 3)
    assert t.loc[("search", "coex", "optimum_iou"), "mean"].item() - t.loc[("search", "coex", "beam_iou"), "mean"].item() \
        == pytest.approx(0.2 / 3)
    assert "netdissect" not in t.loc["search"].index.get_level_values("method")  # no exact search there


def test_specialization_section_and_figure(tables, tmp_path):
    formulas, linear, sims, ti, pure = tables
    shares = pd.DataFrame({"layer": "layer4", "epoch": [0, 0, 6, 6], "range": [0, 1, 0, 1], "units": 8,
                           "unspecialized": [0.75, 0.5, 0.25, 0.0], "weak": [0.125, 0.25, 0.25, 0.125],
                           "specialized": [0.125, 0.25, 0.5, 0.875], "unexplained": 0.0, "dead": 0.0})
    t = summary_table(formulas, linear, sims, ti, pure, specialization=shares).set_index(["section", "method", "metric"])
    assert t.loc[("specialization", "epoch_6", "range1_unspecialized"), "mean"].item() == 0.25
    assert t.loc[("specialization", "epoch_0", "range2_weak"), "mean"].item() == 0.25
    assert t.loc[("specialization", "epoch_6", "range2_specialized"), "n"].item() == 8
    assert len(t.loc["specialization"]) == 4 * 3
    specialization_bars(tmp_path / "s.png", shares)
    with Image.open(tmp_path / "s.png") as im:
        assert im.format == "PNG" and im.size[0] > 500


def test_unit_table_joins_every_method(tables):
    formulas, linear, sims, ti, _ = tables
    u = unit_table(formulas, linear, sims["label"], ti).set_index("unit")
    assert u.loc[0, "netdissect"] == "c0" and u.loc[1, "netdissect_iou"] == pytest.approx(0.4)
    assert u.loc[0, "clustered"] == "0.00-1.00: c0 | 1.00-2.00: c0"
    assert u.loc[0, "le_label"] == "0.50 a + -0.25 b + 0.10" and u.loc[2, "le_label"] == "(dead)"
    assert u.loc[1, "le_label"] == "1.00 c - 0.20"
    assert u.loc[0, "le_label_corr_test"] == pytest.approx(0.8) and u.loc[0, "ti_0.02"] == pytest.approx(0.1)


def test_figures_are_valid_pngs(tables, tmp_path):
    formulas, linear, sims, ti, pure = tables
    table = summary_table(formulas, linear, sims, ti, pure)
    method_bars(tmp_path / "m.png", table, "layer4")
    corr_vs_ablation(tmp_path / "s.png", sims["label"], "layer4", "label")
    top_impact_curve(tmp_path / "t.png", ti, "layer4")
    buckets = pd.DataFrame({"unit": 0, "bucket": range(8), "lo": np.arange(8.0), "hi": np.arange(1.0, 9.0),
                            "n_inputs": [50, 20, 10, 5, 3, 2, 1, 1], "red": np.linspace(0, 1, 8),
                            "sky": np.linspace(1, 0, 8), "border": 1.0})
    area_chart(tmp_path / "a.png", buckets, 0)
    linear_weights(tmp_path / "l.png", {"le_label": linear["le_label"].set_index("unit").loc[0]}, 0)
    for name in ("m", "s", "t", "a", "l"):
        path = tmp_path / f"{name}.png"
        assert path.stat().st_size > 1000
        with Image.open(path) as im:
            im.verify()
            assert im.format == "PNG"
    first = (tmp_path / "m.png").read_bytes()
    method_bars(tmp_path / "m.png", table, "layer4")
    assert (tmp_path / "m.png").read_bytes() == first  # no timestamp: same bytes


def test_area_chart_draws_proportions_that_sum_to_one():
    """Images hold several labels, so raw shares stack past 1 (here up to 2.5); drawn as proportions."""
    buckets = pd.DataFrame({"unit": 0, "bucket": range(3), "lo": [0.0, 1, 2], "hi": [1.0, 2, 3],
                            "n_inputs": [10, 5, 0], "red": [1.0, 0.5, np.nan], "sky": [1.0, 0.2, np.nan],
                            "grass": [0.5, 0.3, np.nan], "border": 1.0})
    p = area_proportions(buckets, top=2)
    assert list(p.columns) == ["red", "sky", "other"]
    assert p.sum(axis=1).tolist() == pytest.approx([1.0, 1.0, 0.0])  # the empty bucket stacks to 0
    assert p.loc[0, "red"] == pytest.approx(0.4) and p.loc[0, "other"] == pytest.approx(0.2)
    assert p.loc[1, "red"] == pytest.approx(0.5) and p.loc[1, "other"] == pytest.approx(0.3)


def test_figures_are_saved_at_print_resolution(tables, tmp_path):
    top_impact_curve(tmp_path / "t.png", tables[3], "layer4")
    with Image.open(tmp_path / "t.png") as im:
        assert im.info["dpi"] == pytest.approx((200, 200), abs=0.1) and im.size[0] >= 900


def _maps():
    """Five images of one unit, 2x2 maps; image 3 repeats image 2's map (a tie broken by id)."""
    ids = np.array([0, 1, 2, 3, 4], np.int32)
    maps = np.array([[[1.5, 1.2], [1.9, 0.1]], [[1.1, 0.0], [0.0, 3.0]], [[0.0, 0.5], [0.2, 0.9]],
                     [[0.0, 0.5], [0.2, 0.9]], [[0.0, 0.0], [0.0, 0.05]]], np.float32)
    return ids, maps


def test_top_images_per_range_rank_by_cells_in_range():
    ids, maps = _maps()
    assert top_images(ids, maps, 1.0, 2.0, 5).tolist() == [0, 1]           # 3 cells, then 1; others none
    assert top_images(ids, maps, 0.0, 1.0, 5).tolist() == [2, 3, 0, 4]     # 3, 3 (tie: id), 1 (mean 0.1), 1 (0.05)
    assert top_images(ids, maps, 2.0, 3.0, 5).tolist() == [1]              # (lo, hi]: 3.0 is in
    assert top_images(ids, maps, 0.0, 1.0, 1).tolist() == [2]


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(10):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((8, 8, 3), 25 * i, np.uint8)).save(p)
        paths.append(p)
    return paths


def test_range_figures_are_pngs_and_bad_input_names_the_unit(tables, images, tmp_path):
    formulas, *_ = tables
    ids, maps = _maps()
    ranges_figure(tmp_path / "r.png", formulas["clustered"], 0, ids, maps, images)
    top_figure(tmp_path / "t.png", {"netdissect": formulas["netdissect"]}, 0, ids, maps, images)
    for name in ("r", "t"):
        with Image.open(tmp_path / f"{name}.png") as im:
            im.verify()
            assert im.format == "PNG"
    first = (tmp_path / "r.png").read_bytes()
    ranges_figure(tmp_path / "r.png", formulas["clustered"], 0, ids, maps, images)
    assert (tmp_path / "r.png").read_bytes() == first
    with pytest.raises(DataError, match=r"Clustered CoEx table has no columns \['n_cells'\]"):
        ranges_figure(tmp_path / "x.png", formulas["clustered"].drop(columns="n_cells"), 0, ids, maps, images)
    with pytest.raises(DataError, match="unit 3 is not in the Clustered CoEx table"):
        ranges_figure(tmp_path / "x.png", formulas["clustered"], 3, ids, maps, images)
    with pytest.raises(DataError, match="image id 3 is past the dataset's 3 images"):
        ranges_figure(tmp_path / "x.png", formulas["clustered"], 0, ids, maps, images[:3])


def test_dead_and_unexplained_units_read_as_words(tables, images, tmp_path, monkeypatch):
    """The per-unit table says (dead) for a dead unit and (none) where no concept explains a live
    unit or range; a range figure labels a missing IoU with a dash, never "nan"."""
    formulas, linear, sims, ti, _ = tables
    formulas["clustered"] = pd.concat([formulas["clustered"],
                                       _formula([0, 2], [np.nan, np.nan], ["empty", "dead"]).assign(
                                           cluster=[2, -1], lo=[2.0, np.nan], hi=[3.0, np.nan], formula=None)])
    le = linear["le_label"]
    le["concepts"], le["weights"] = [["a", "b"], [], []], [[0.5, -0.25], [], []]  # unit 1: live, explained by none
    u = unit_table(formulas, linear, sims["label"], ti).set_index("unit")
    assert u.loc[2, "netdissect"] == "(dead)" and u.loc[2, "clustered"] == "(dead)" and u.loc[2, "le_label"] == "(dead)"
    assert u.loc[0, "clustered"] == "0.00-1.00: c0 | 1.00-2.00: c0 | 2.00-3.00: (none)"
    assert u.loc[1, "le_label"] == "(none)"
    labels = []
    monkeypatch.setattr("nexplain.report.range_figures._figure", lambda path, title, rows, *a: labels.extend(rows))
    ranges_figure(tmp_path / "r.png", formulas["clustered"], 0, *_maps(), images)
    assert labels[2]["label"] == "range 2: (2, 3]\n(none)\nIoU \u2013, 10 cells\n[empty]"


def test_unit_table_carries_each_explanations_causal_effect(tables):
    formulas, linear, sims, ti, _ = tables
    efficacy = pd.DataFrame({"method": ["netdissect", "netdissect", "le_label", "random"], "unit": [0, 1, 0, 0],
                             "effect": [0.5, np.nan, 1.5, 0.1]})
    t = unit_table(formulas, linear, sims["label"], ti, efficacy=efficacy).set_index("unit")
    assert t.loc[0, "netdissect_effect"] == 0.5 and np.isnan(t.loc[1, "netdissect_effect"])
    assert t.loc[0, "le_label_effect"] == 1.5 and "random_effect" not in t.columns  # not an explainer of the layer
