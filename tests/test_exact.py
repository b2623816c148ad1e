"""Exact search and atoms: the optimum of every left-deep formula, found by brute force on dense masks."""

import itertools

import numpy as np
import pytest

from nexplain.compositional.atoms import Atoms
from nexplain.compositional.exact import exact_search
from nexplain.compositional.formulas import OPS, Formula, leaf
from nexplain.compositional.masks import Bitmap, ConceptStore
from nexplain.compositional.search import Scored, mmesh_search, rank
from test_formulas import dense_eval
from test_masks import random_concepts
from test_search import dense_iou


def brute_force(masks, a, length, penalty=None):
    """Every left-deep formula of length <= `length`, repeats included: the rank-best one."""
    live = [c for c in range(len(masks)) if masks[c].any()]
    best = None
    for n in range(1, length + 1):
        for leaves in itertools.product(live, repeat=n):
            for ops in itertools.product(OPS, repeat=n - 1):
                f = Formula(leaves, ops)
                if f.is_constant:
                    continue
                v = float(dense_iou(dense_eval(f, masks), a))
                s = v * (1.0 if penalty is None else penalty ** (n - 1))
                if s > 0 and (best is None or (rank(Scored(f, v, s)), f.written) < (rank(best), best.formula.written)):
                    best = Scored(f, v, s)
    return best


def unit(rng, masks, kind):
    """A unit bitmap: a noisy formula of 2-3 concepts, or random rectangles."""
    n, h, w = masks.shape[1:]
    if kind == "formula":
        a, b, c = rng.choice(len(masks), 3, replace=False)
        dense = (masks[a] | masks[b]) & ~masks[c]
        dense ^= rng.random(dense.shape) < 0.03
    else:
        dense = np.zeros((n, h, w), bool)
        for i in rng.choice(n, n // 2, replace=False):
            r0, c0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
            dense[i, r0:r0 + 3, c0:c0 + 3] = True
    return dense


@pytest.mark.parametrize("seed", range(6))
def test_exact_search_is_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    masks, level = random_concepts(rng, 7, 12, 6, 6)
    store = ConceptStore.from_dense(masks, level)
    for kind in ("formula", "random"):
        dense = unit(rng, masks, kind)
        want = brute_force(masks, dense, 3)
        got = exact_search(Bitmap.from_dense(dense), store, length=3)
        assert got.formula.written == want.formula.written and got.iou == want.iou
        assert got.proof.max_pruned < got.score
        assert got.proof.expanded + got.proof.pruned == got.proof.prefixes


def test_exact_search_other_lengths_and_penalty():
    rng = np.random.default_rng(11)
    masks, level = random_concepts(rng, 5, 8, 5, 5)
    store = ConceptStore.from_dense(masks, level)
    dense = unit(rng, masks, "formula")
    for length, penalty in ((1, None), (2, None), (3, 0.9), (4, None)):
        want = brute_force(masks, dense, length, penalty)
        got = exact_search(Bitmap.from_dense(dense), store, length=length, penalty=penalty)
        assert (got.formula.written, got.score) == (want.formula.written, want.score), (length, penalty)


def test_exact_search_never_below_the_beam_and_an_incumbent_changes_nothing():
    rng = np.random.default_rng(3)
    masks, level = random_concepts(rng, 14, 30, 8, 8)
    store = ConceptStore.from_dense(masks, level)
    for kind in ("formula", "random", "formula"):
        A = Bitmap.from_dense(unit(rng, masks, kind))
        beam = mmesh_search(A, store, length=3, beam=2)
        plain = exact_search(A, store, length=3)
        started = exact_search(A, store, length=3, incumbent=beam.beam[0])
        assert plain.score >= beam.score
        assert (started.formula.written, started.iou) == (plain.formula.written, plain.iou)
        assert started.proof.expanded <= plain.proof.expanded


def test_atoms_count_every_concept_and_bitmap_exactly():
    rng = np.random.default_rng(5)
    masks, level = random_concepts(rng, 9, 10, 7, 5)
    masks[:, 0], level[:, 0] = False, False  # an image with no concept: its cells are the empty atom
    store = ConceptStore.from_dense(masks, level)
    atoms = Atoms.from_store(store)
    assert np.array_equal(atoms.member.T @ atoms.cells, store.sizes)
    assert atoms.cells.sum() == 10 * 7 * 5
    dense = rng.random((10, 7, 5)) < 0.3
    a = atoms.count(Bitmap.from_dense(dense))
    assert np.array_equal(atoms.member.T @ a, [np.count_nonzero(m & dense) for m in masks])
    # atoms are distinct concept sets; a bitmap reaching images with no concept counts there too
    assert np.array_equal(atoms.count(Bitmap.from_dense(np.ones((10, 7, 5), bool))), atoms.cells)
    assert len(np.unique(atoms.member.toarray(), axis=0)) == atoms.n_atoms


def test_exact_search_dead_and_untouched_units():
    rng = np.random.default_rng(0)
    masks, level = random_concepts(rng, 4, 5, 4, 4)
    store = ConceptStore.from_dense(masks, level)
    assert exact_search(Bitmap.empty(5, (4, 4)), store).dead
    lonely = np.zeros((5, 4, 4), bool)
    covered = masks.any(0)
    if (~covered).any():
        lonely[~covered] = True
        assert exact_search(Bitmap.from_dense(lonely), store).formula is None
    with pytest.raises(ValueError, match="penalty"):
        exact_search(Bitmap.from_dense(masks[0]), store, penalty=0)
    assert exact_search(Bitmap.from_dense(masks[0] | masks[1]), store, length=1).formula in (leaf(0), leaf(1))


def test_counting_several_bitmaps_at_once_is_counting_each():
    rng = np.random.default_rng(8)
    masks, level = random_concepts(rng, 8, 12, 6, 5)
    masks[:, 3], level[:, 3] = False, False
    store = ConceptStore.from_dense(masks, level)
    atoms = Atoms.from_store(store)
    bms = [Bitmap.from_dense(rng.random((12, 6, 5)) < p) for p in (0.05, 0.4, 0.0, 0.9)]
    for many, bm in zip(atoms.count_many(bms), bms):
        assert np.array_equal(many, atoms.count(bm)) and many.sum() == bm.count()


def test_groups_too_large_for_a_table_count_by_search(monkeypatch):
    import nexplain.compositional.atoms as atoms_module
    rng = np.random.default_rng(9)
    masks, level = random_concepts(rng, 8, 12, 6, 5)
    store = ConceptStore.from_dense(masks, level)
    dense = rng.random((12, 6, 5)) < 0.5
    with_table = Atoms.from_store(store).count(Bitmap.from_dense(dense))
    monkeypatch.setattr(atoms_module, "TABLE_KEYS", 0)
    searched = Atoms.from_store(store)
    assert all(g.table is None for g in searched.groups)
    assert np.array_equal(searched.count(Bitmap.from_dense(dense)), with_table)
