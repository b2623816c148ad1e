"""Planted units: specs checked against the concept names, and each kind's function on the masks."""

import numpy as np
import pytest

from nexplain.errors import ConfigError
from nexplain.truth.planted import image_parts, parse_units, planted_cells, planted_table, planted_targets
from truth_store import NAMES, make_store


@pytest.fixture(scope="module")
def store():
    return make_store()


def spec(**kw):
    return {"layer": "layer3", "unit": 0, **kw}


def test_each_kind_computes_its_function_on_the_masks(store):
    st, masks = store
    red, blue, circle, square, snow, lava = masks
    single, formula, graded, linear, poly = parse_units([
        spec(unit=0, kind="single", formula="red"),
        spec(unit=1, kind="formula", formula="(red OR blue) AND NOT circle"),
        spec(unit=2, kind="graded", levels=[{"formula": "blue", "level": 0.4}, {"formula": "red AND square", "level": 1.0}]),
        spec(unit=3, kind="linear", weights={"snow": 0.5, "circle": 0.25}),
        spec(unit=4, kind="polysemantic", parts=["lava", "red AND circle"]),
    ], NAMES)
    assert np.array_equal(planted_cells(single, st, NAMES), red.astype(np.float32))
    assert np.array_equal(planted_cells(formula, st, NAMES) > 0, (red | blue) & ~circle)
    g = planted_cells(graded, st, NAMES)
    assert np.array_equal(g == 1.0, red & square) and np.array_equal(g == np.float32(0.4), blue)
    lin = planted_cells(linear, st, NAMES)
    expect = 0.5 * snow.any((1, 2)) + 0.25 * circle.any((1, 2))
    assert np.allclose(lin, expect[:, None, None])
    assert np.array_equal(planted_cells(poly, st, NAMES) > 0, lava | (red & circle))
    parts = image_parts(poly, st, NAMES)
    assert np.array_equal(parts == 0, lava.any((1, 2)))  # the first part present wins
    assert np.array_equal(parts == 1, ~lava.any((1, 2)) & (red & circle).any((1, 2)))
    assert single.concepts(NAMES) == {"red"} and formula.concepts(NAMES) == {"red", "blue", "circle"}
    t = planted_targets([single, linear], st, NAMES)
    assert t.dtype == np.uint8 and t.shape == (st.n_images, 2, 8, 8) and t[:, 0].max() == 255
    table = planted_table([single, graded])
    assert table["kind"].tolist() == ["single", "graded"] and "red AND square" in table.loc[1, "levels"]


@pytest.mark.parametrize("bad, message", [
    (spec(kind="wide"), r"'truth.units.0.kind': 'wide' is not a planted kind; valid choices: single, formula"),
    (spec(kind="single", formula="green"), r"cannot read formula 'green': unknown concept 'green'; concepts: red, blue"),
    (spec(kind="single", formula="red OR blue"), r"a single unit names one concept"),
    (spec(kind="linear", weights={"snow": 0.7, "red": 0.6}), r"weights sum to at most 1"),
    (spec(kind="polysemantic", parts=["lava"]), r"needs 'parts' with two or more formulas"),
])
def test_bad_specs_are_refused_with_the_key(bad, message):
    with pytest.raises(ConfigError, match=message):
        parse_units([bad], NAMES)


def test_a_unit_planted_twice_is_refused():
    with pytest.raises(ConfigError, match=r"'truth.units.1': unit 0 of layer3 is planted twice"):
        parse_units([spec(kind="single", formula="red"), spec(kind="single", formula="blue")], NAMES)
