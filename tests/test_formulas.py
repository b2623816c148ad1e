"""Formulas: canonical keys against brute-force truth tables, text round trip, evaluation."""

import itertools

import numpy as np
import pytest

from nexplain.compositional.formulas import (AND, AND_NOT, OPS, OR, Formula, concepts, evaluate, evaluate_region,
                                             leaf, parse, to_str)
from nexplain.compositional.masks import ConceptStore
from test_masks import check_geometry, random_concepts

a, b, c, d = 0, 1, 2, 3


def f(*tokens) -> Formula:
    """f(a, OR, b, AND_NOT, c) -> ((a OR b) AND NOT c)."""
    return Formula(tokens[0::2], tokens[1::2])


def dense_eval(form: Formula, masks: np.ndarray) -> np.ndarray:
    out = masks[form.leaves[0]].copy()
    for op, x in zip(form.ops, form.leaves[1:]):
        out = out | masks[x] if op == OR else out & masks[x] if op == AND else out & ~masks[x]
    return out


def random_formula(rng, n_concepts, max_len) -> Formula:
    n = int(rng.integers(1, max_len + 1))
    return Formula(rng.integers(0, n_concepts, n).tolist(), [OPS[i] for i in rng.integers(0, 3, n - 1)])


ALL_ASSIGNMENTS = np.array(list(itertools.product([False, True], repeat=4))).T[:, :, None, None]


def truth(form: Formula) -> tuple:
    """Brute-force truth table over 4 variables (all 16 assignments)."""
    return tuple(dense_eval(form, ALL_ASSIGNMENTS).ravel())


def test_equivalences():
    assert f(a, OR, b) == f(b, OR, a) and hash(f(a, OR, b)) == hash(f(b, OR, a))
    assert f(a, AND_NOT, b, AND_NOT, c) == f(a, AND_NOT, c, AND_NOT, b)
    assert f(a, OR, a) == leaf(a) and f(a, AND, a) == leaf(a)
    assert f(a, OR, b, AND, a) == leaf(a)
    assert f(a, AND, b, OR, a) == leaf(a)
    assert f(a, OR, b, OR, c) == f(c, OR, a, OR, b)
    assert f(a, AND_NOT, b, OR, b) == f(a, OR, b)
    assert f(a, AND_NOT, a).is_constant and f(a, AND, b, AND_NOT, b).is_constant
    assert len({f(a, OR, b), f(b, OR, a), f(a, OR, b, OR, a), leaf(a), f(a, AND, a)}) == 2


def test_non_equivalences():
    assert f(a, OR, b) != f(a, AND, b)
    assert f(a, AND_NOT, b) != f(b, AND_NOT, a)
    assert f(a, OR, b, AND, c) != f(a, AND, c, OR, b)
    assert f(a, OR, b) != f(a, OR, c)
    assert leaf(a) != leaf(b)
    assert not f(a, AND, b).is_constant


def test_key_exact_against_truth_tables():
    rng = np.random.default_rng(0)
    forms = [random_formula(rng, 4, 5) for _ in range(400)]
    for x, y in zip(forms[::2], forms[1::2]):
        assert (x == y) == (truth(x) == truth(y)), (x, y)
        assert (x.key == y.key) == (truth(x) == truth(y))
    for x in forms:  # the key names exactly the concepts the function depends on
        tt = np.array(truth(x)).reshape([2] * 4)
        depends = [v for v in range(4) if not np.array_equal(np.take(tt, 0, v), np.take(tt, 1, v))]
        assert list(x.key[0]) == depends
        assert x.is_constant == (not any(truth(x)))


def test_len_concepts_written():
    g = f(c, OR, a, AND_NOT, c, AND, b)
    assert len(g) == 4 and concepts(g) == (a, b, c)
    assert g.left == f(c, OR, a, AND_NOT, c) and g.left.written == (3, (c, a, c), (0, 2))
    assert leaf(a).left is None and leaf(a).extend(OR, b).written == f(a, OR, b).written
    with pytest.raises(ValueError):
        Formula((a, b), ())
    with pytest.raises(ValueError):
        Formula((a, b), ("XOR",))


NAMES = ["water", "river", "blue sky", "glass-12", "AND", 'say "hi"', "(paren)", "back\\slash",
         "not", "7"]


def test_str_examples():
    g = f(0, OR, 1, AND_NOT, 2)
    assert to_str(g, NAMES) == '(water OR river) AND NOT "blue sky"'
    assert to_str(f(3, AND, 4), NAMES) == 'glass-12 AND "AND"'
    assert str(g) == "(0 OR 1) AND NOT 2"
    assert to_str(f(0, OR, 1, AND, 2, OR, 3)) == "((0 OR 1) AND 2) OR 3"
    assert parse("(water OR river) AND NOT \"blue sky\"", NAMES).written == g.written
    assert parse("  water   AND NOT(river) ", NAMES).written == f(0, AND_NOT, 1).written


def test_str_parse_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(300):
        g = random_formula(rng, len(NAMES), 6)
        assert parse(to_str(g, NAMES), NAMES).written == g.written
        assert parse(to_str(g)).written == g.written
        mapping = {i + 100: n for i, n in enumerate(NAMES)}
        h = Formula([x + 100 for x in g.leaves], g.ops)
        assert parse(to_str(h, mapping), mapping).written == h.written


@pytest.mark.parametrize("text", ["water OR (river AND blue)", "water OR", "AND water", "water NOT river",
                                  "(water OR river", "water river", "ocean", '"water'])
def test_parse_rejects(text):
    with pytest.raises(ValueError):
        parse(text, ["water", "river", "blue"])


def test_parse_rejects_duplicate_names():
    with pytest.raises(ValueError, match="duplicate"):
        parse("a", ["a", "a"])


def test_evaluate_equals_dense():
    rng = np.random.default_rng(2)
    masks, level = random_concepts(rng, 7, 12, 5, 7)
    st = ConceptStore.from_dense(masks, level)
    for _ in range(150):
        g = random_formula(rng, 7, 5)
        want = dense_eval(g, masks)
        bm = evaluate(g, st)
        np.testing.assert_array_equal(bm.to_dense(), want)
        assert bm.ids.tolist() == np.flatnonzero(want.any((1, 2))).tolist()
        check_geometry(evaluate_region(g, st), want)
