import math

import numpy as np
import pandas as pd
import pytest

from nexplain.compositional.formulas import parse
from nexplain.compositional.specialization import CLASSES, classify, default_table, defaults, shares

NAMES = ["red", "green", "blue", "ring", "circle", "grass"]


def clustered(rows, layer="layer4"):
    """Clustered CoEx rows from (unit, cluster, formula | None | 'dead')."""
    out = []
    for unit, cluster, f in rows:
        status = "dead" if f == "dead" else "ok" if f else "empty"
        out.append({"unit": unit, "cluster": -1 if f == "dead" else cluster,
                    "formula": f if status == "ok" else None, "status": status, "layer": layer})
    return pd.DataFrame(out)


# The random init of 5 units x 2 ranges: "red OR green" is everywhere, "(blue OR red) AND ring" twice.
RANDOM = clustered([(u, 0, "red OR green") for u in range(5)]
                   + [(0, 1, "(blue OR red) AND ring"), (1, 1, "(blue OR red) AND ring"), (2, 1, "grass"),
                      (3, 1, "circle AND NOT ring"), (4, 1, "green")])


def test_defaults_are_the_most_frequent_formulas_and_prefixes():
    formulas, prefixes = defaults(RANDOM, NAMES, share=0.2)  # ceil(0.2 x 5 units) = 1
    assert formulas == [parse("red OR green", NAMES)]
    assert prefixes == [parse("red", NAMES)]  # the prefix of the most frequent repeated formula
    formulas, prefixes = defaults(RANDOM, NAMES, share=0.4)  # 2 of each
    assert formulas == [parse("red OR green", NAMES), parse("(blue OR red) AND ring", NAMES)]
    assert prefixes == [parse("red", NAMES), parse("blue OR red", NAMES)]


def test_ties_keep_first_appearance_and_prefixes_need_repeats():
    t = clustered([(0, 0, "green AND ring"), (1, 0, "blue"), (2, 0, "red OR grass")])
    formulas, prefixes = defaults(t, NAMES, share=1.0)
    assert [str(f) for f in formulas] == [str(parse(x, NAMES)) for x in ("green AND ring", "blue", "red OR grass")]
    assert prefixes == []  # no formula repeats


def test_classes_by_formula_then_prefix():
    formulas, prefixes = defaults(RANDOM, NAMES, share=0.4)
    trained = clustered([(0, 0, "green OR red"),            # a default, written the other way round
                         (1, 0, "(red OR blue) AND grass"),  # prefix "red OR blue" = default prefix "blue OR red"
                         (2, 0, "red AND NOT circle"),       # prefix "red"
                         (3, 0, "circle AND grass"),
                         (4, 0, None), (5, 0, "dead")])
    assert list(classify(trained, NAMES, formulas, prefixes)) == [
        "unspecialized", "weak", "weak", "specialized", "unexplained", "dead"]
    assert list(classify(clustered([(0, 0, "green")]), NAMES, formulas, prefixes)) == ["specialized"]


def test_shares_per_layer_epoch_and_range_add_up():
    trained = clustered([(u, 0, "red OR green") for u in range(3)] + [(3, 0, "blue AND ring"), (4, 0, "dead")]
                        + [(u, 1, "circle AND ring") for u in range(4)])
    t = shares({0: RANDOM, 7: trained}, NAMES, share=0.2, k=2)
    assert list(t["epoch"].unique()) == [0, 7] and list(t["range"].unique()) == [0, 1]
    assert np.allclose(t[list(CLASSES)].sum(axis=1), 1.0)
    at = t.set_index(["epoch", "range"])
    assert at.loc[(0, 0), "unspecialized"] == 1.0  # the random init against its own defaults
    assert at.loc[(7, 0), ["unspecialized", "specialized", "dead"]].tolist() == [0.6, 0.2, 0.2]
    assert at.loc[(7, 1), ["specialized", "dead"]].tolist() == [0.8, 0.2]  # a dead unit is dead in every range
    with pytest.raises(ValueError, match="random init"):
        shares({7: trained}, NAMES)


def test_default_table_counts():
    d = default_table({0: RANDOM}, NAMES, share=0.4)
    assert d[d["kind"] == "formula"]["count"].tolist() == [5, 2]
    assert d[d["kind"] == "prefix"]["formula"].tolist() == ["red", "blue OR red"]
    assert d[d["kind"] == "prefix"]["count"].tolist() == [5, 2]
    assert math.ceil(0.4 * 5) == len(d[d["kind"] == "formula"])
