"""Simulating explanations: fuzzy formulas, correlation, the norm scaling."""

import numpy as np
import pytest

from nexplain.errors import DataError
from nexplain.linear.simulate import Simulator, norm_scaling, pearson


def test_terms_formulas_and_weights():
    P = np.array([[1.0, 0.2, 0.0], [0.3, 0.9, 1.0], [0.0, 0.0, 0.5]])
    sim = Simulator(P, ["sky", "water", "snow scene"])
    assert sim.term("water").tolist() == [0.2, 0.9, 0.0]
    assert sim.term("sky OR water").tolist() == [1.0, 0.9, 0.0]
    assert sim.term("(sky OR water) AND NOT \"snow scene\"").tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert sim.term("sky AND water").tolist() == [0.2, 0.3, 0.0]
    s = sim.simulate([(2.0, "sky"), (-1.0, "water")], bias=0.5)
    assert s.tolist() == pytest.approx([2.3, 0.2, 0.5])
    with pytest.raises(DataError, match="grass"):
        sim.term("grass")


def test_pearson_and_norm_scaling():
    rng = np.random.default_rng(0)
    s = rng.normal(size=200)
    q = 3 * s + 1 + rng.normal(size=200)
    c, d = norm_scaling(s, q)
    slope, icpt = np.polyfit(s, q, 1)
    assert (c, d) == pytest.approx((slope, icpt))
    assert pearson(s, q) == pytest.approx(np.corrcoef(s, q)[0, 1])
    assert np.isnan(pearson(np.ones(5), np.arange(5)))   # a dead unit: NaN, not a crash
    assert norm_scaling(np.ones(5), np.arange(5.0)) == (0.0, 2.0)
