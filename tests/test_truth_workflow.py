"""`snakemake truth` on the tiny run: the planted model, every method on its planted units in three
variants, and the grades, table and figure (the grading itself: test_grade.py, on a larger store)."""

import json
import sys

import pandas as pd
import pytest

from workflow_copy import run


def snakemake_truth(wf, *args):
    """`snakemake truth` (the target before --configfile, which takes every name after it)."""
    return run(wf, sys.executable, "-m", "snakemake", "truth", "--cores", "2", *args, "--configfile", "tiny.yaml")

METHODS = {"netdissect", "coex", "clustered", "le_label", "le_world_siglip", "pure"}


@pytest.fixture(scope="module")
def truth(tiny_run):
    wf = tiny_run[0]
    snakemake_truth(wf)
    return wf / "results" / "truth"


def test_every_variant_and_method_grades_every_planted_unit(truth):
    g = pd.read_parquet(truth / "grades.parquet")
    assert set(g["variant"]) == {"planted", "random", "shuffled", "constant"}
    planted = g[g["variant"] == "planted"]
    assert set(planted["method"]) == METHODS
    for method, part in planted.groupby("method"):
        units = set(zip(part["layer"], part["unit"]))
        assert units == ({("layer4", u) for u in range(3)} if method == "pure"
                         else {("layer3", 0), ("layer3", 1), ("layer4", 0), ("layer4", 1), ("layer4", 2)}), method
    assert g["pearson"].between(-1, 1).all() and g["set_f1"].between(0, 1).all()
    assert (g[g["variant"] == "constant"]["pearson"] == 0).all()
    ari = g.loc[(g["method"] == "pure") & (g["kind"] == "polysemantic"), ["variant", "ari"]]
    assert len(ari) == 3 and ari["ari"].dropna().between(-1, 1).all()  # NaN: one circuit, or one part, among the top images
    assert g.loc[g["method"] != "pure", "ari"].isna().all()
    assert pd.read_parquet(truth / "planted.parquet")["kind"].tolist() == \
        ["single", "formula", "graded", "linear", "polysemantic"]


def test_the_checks_metrics_table_and_figure_are_written(truth):
    checks = pd.read_parquet(truth / "planting.parquet")
    assert len(checks) == 5 and checks["corr"].between(-1, 1).all()
    metrics = json.loads((truth / "truth.json").read_text())
    assert metrics["planting.units"] == 5 and "accuracy.planted" in metrics and "accuracy.base" in metrics
    assert "planted.coex.set_f1" in metrics and "shuffled.le_label.pearson" in metrics
    page = (truth / "truth.html").read_text()
    assert "Sanity rows" in page and "<table>" in page and "polysemantic" in page
    assert (truth / "truth.png").read_bytes()[:4] == b"\x89PNG"


def test_nothing_to_do_after_truth(tiny_run, truth):
    out = snakemake_truth(tiny_run[0], "--dry-run").stdout
    assert "Nothing to be done" in out


def test_the_planted_concepts_are_rendered_in_and_out_of_their_units(truth):
    c = pd.read_parquet(truth / "causal.parquet")
    assert set(c["variant"]) == {"planted", "random"} and len(c) == 10
    planted = c[c["variant"] == "planted"].set_index(["layer", "unit"])
    assert planted.loc[("layer3", 0), "concepts"].tolist() == ["red"]
    assert sorted(planted.loc[("layer4", 2), "concepts"]) == ["lava", "night"]  # scenes toggle too
    assert (c["n_concepts"] > 0).all() and c["effect"].notna().all()
