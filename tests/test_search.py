"""NetDissect, beam search and MMESH: planted formulas, exhaustiveness, a dense reference, pruning."""

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from nexplain.compositional.formulas import AND, AND_NOT, OPS, OR, Formula, leaf
from nexplain.compositional.masks import Bitmap, ConceptStore
from nexplain.compositional.search import SearchCache, beam_search, mmesh_search, netdissect
from test_formulas import dense_eval, random_formula
from test_masks import random_concepts


def dense_iou(m, a):
    inter = np.count_nonzero(m & a)
    union = np.count_nonzero(a) + np.count_nonzero(m) - inter
    return np.int64(inter) / np.int64(union) if union else 0.0


def reference_beam(masks, a, length, beam, start_beam=None, penalty=None, final_beam=1):
    """docs/methods.md written the slow obvious way on dense masks: [(written, iou, score)]."""
    def factor(n):
        return 1.0 if penalty is None else float(penalty) ** (n - 1)
    live = [c for c in range(len(masks)) if masks[c].any()]
    singles = sorted(((float(dense_iou(masks[c], a)), c) for c in live), key=lambda t: (-t[0], t[1]))
    cur = [(leaf(c), v, v) for v, c in singles[:start_beam or beam] if v > 0]
    if length == 1:
        return [(g.written, v, s) for g, v, s in cur[:min(beam, final_beam)]]
    for r in range(length - 1):
        locked, best = {g.key for g, _, _ in cur}, {}
        for g, _, _ in cur:
            for c in live:
                for op in OPS:
                    h = g.extend(op, c)
                    if h.is_constant or h.key in locked:
                        continue
                    v = float(dense_iou(dense_eval(h, masks), a))
                    s = v * factor(len(h))
                    old = best.get(h.key)
                    if s > 0 and (old is None or (-s, h.written) < (-old[2], old[0].written)):
                        best[h.key] = (h, v, s)
        keep = beam if r < length - 2 else final_beam
        cur = sorted(cur + list(best.values()), key=lambda e: (-e[2], len(e[0].key[0]), e[0].key))[:keep]
    return [(g.written, v, s) for g, v, s in cur]


def summary(result):
    return [(e.formula.written, e.iou, e.score) for e in result.beam]


def blocks(rng, n_concepts, n_images, h, w):
    """Concepts made of 1-2 random rectangles in a random 40% of images."""
    masks = np.zeros((n_concepts, n_images, h, w), bool)
    for c in range(n_concepts):
        for n in np.flatnonzero(rng.random(n_images) < 0.4):
            for _ in range(rng.integers(1, 3)):
                r0, c0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
                masks[c, n, r0:r0 + rng.integers(2, h // 2), c0:c0 + rng.integers(2, w // 2)] = True
    return masks


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(11)
    masks = blocks(rng, 14, 80, 16, 16)
    # concept 7 covers (2 OR 5) in 3/4 of the images and the bottom half of the others, so
    # that (2 OR 5) AND 7 is reachable by a beam that grows (2 OR 5) first
    keep = rng.random(80) < 0.75
    masks[7] = np.where(keep[:, None, None], masks[2] | masks[5], np.arange(16)[:, None] >= 8)
    return rng, masks, ConceptStore.from_dense(masks)


@pytest.mark.parametrize("target", [Formula((2, 5), (OR,)), Formula((2, 5), (AND_NOT,)),
                                    Formula((2, 5, 7), (OR, AND)), Formula((3, 8), (AND,))])
def test_planted_formulas_recovered(planted, target):
    rng, masks, st = planted
    a = dense_eval(target, masks)
    flip = rng.choice(a.size, max(1, a.sum() // 50), replace=False)  # noise: 2% of |target|
    a.flat[flip] ^= True
    A = Bitmap.from_dense(a)
    exact = beam_search(A, st, length=3, beam=5)
    fast = mmesh_search(A, st, length=3, beam=5)
    assert exact.formula == target and exact.iou > 0.95
    assert summary(fast) == summary(exact)
    assert fast.visited < exact.visited and fast.visited_compound < exact.visited_compound / 3
    assert exact.visited == st.n_concepts * (1 + 2 * 5 * 3)  # singles + 2 rounds x beam x ops x C


def test_exhaustive_best_equals_wide_beam():
    rng = np.random.default_rng(5)
    for case in range(6):
        masks, level = random_concepts(rng, 5, 8, 4, 5)
        a = rng.random(masks.shape[1:]) < 0.3
        if case % 2:
            a = dense_eval(random_formula(rng, 5, 3), masks) ^ (rng.random(a.shape) < 0.05)
        live = [c for c in range(5) if masks[c].any()]
        best = 0.0
        for n in (1, 2, 3):
            for leaves in itertools.product(live, repeat=n):
                for ops in itertools.product(OPS, repeat=n - 1):
                    g = Formula(leaves, ops)
                    best = max(best, float(dense_iou(dense_eval(g, masks), a)))
        st = ConceptStore.from_dense(masks, level)
        for fn in (beam_search, mmesh_search):
            r = fn(Bitmap.from_dense(a), st, length=3, beam=200, start_beam=5)
            assert abs(r.iou - best) < 1e-9


def random_case(rng, n_c=None, n=None, h=None, w=None, kind=None, **params):
    """(masks, image_level, A, search params): sizes and params drawn unless given."""
    n_c, n = n_c or rng.integers(3, 10), n or rng.integers(2, 20)
    h, w = h or rng.integers(2, 9), w or rng.integers(2, 9)
    masks, level = random_concepts(rng, n_c, n, h, w)
    kind = rng.integers(0, 3) if kind is None else kind
    if kind == 0:
        a = rng.random((n, h, w)) < rng.uniform(0.02, 0.5)
    else:  # a formula's mask, with 0, 3 or 6% of the cells flipped
        a = dense_eval(random_formula(rng, n_c, 3), masks) ^ (rng.random((n, h, w)) < 0.03 * kind)
    drawn = dict(length=int(rng.integers(1, 5)), beam=int(rng.integers(1, 7)),
                 start_beam=[None, int(rng.integers(1, 11))][rng.integers(0, 2)],
                 penalty=[None, float(rng.uniform(0.5, 1.0))][rng.integers(0, 2)])
    return masks, level, a, drawn | params


@hs.composite
def cases(draw):
    """Hypothesis draws the shape of the problem and the search params; the masks come
    from a drawn seed (shrinking then reaches small stores and short searches)."""
    seed = draw(hs.integers(0, 2 ** 32 - 1))
    return random_case(np.random.default_rng(seed), n_c=draw(hs.integers(3, 9)),
                       n=draw(hs.integers(2, 19)), h=draw(hs.integers(2, 8)), w=draw(hs.integers(2, 8)),
                       kind=draw(hs.integers(0, 2)), length=draw(hs.integers(1, 4)),
                       beam=draw(hs.integers(1, 6)), final_beam=draw(hs.integers(1, 6)),
                       start_beam=draw(hs.none() | hs.integers(1, 10)),
                       penalty=draw(hs.none() | hs.floats(0.5, 1.0)))


PROPERTY = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(cases())
def test_beam_search_equals_dense_reference(case):
    masks, level, a, params = case
    r = beam_search(Bitmap.from_dense(a), ConceptStore.from_dense(masks, level), **params)
    assert summary(r) == reference_beam(masks, a, **params)


@PROPERTY
@given(cases())
def test_mmesh_equals_beam_search(case):
    masks, level, a, params = case
    st, A = ConceptStore.from_dense(masks, level), Bitmap.from_dense(a)
    exact, fast = beam_search(A, st, **params), mmesh_search(A, st, **params)
    assert summary(fast) == summary(exact)
    assert (fast.formula, fast.iou, fast.score, fast.dead) == (exact.formula, exact.iou,
                                                               exact.score, exact.dead)
    assert fast.visited <= exact.visited
    assert len({e.formula.key for e in exact.beam}) == len(exact.beam)   # no two equivalent
    assert not any(e.formula.is_constant for e in exact.beam)
    # the last round's size changes what is kept, never the best
    whole = mmesh_search(A, st, **params | {"final_beam": params["beam"]})
    assert (whole.formula, whole.iou) == (fast.formula, fast.iou)


def test_mmesh_visits_fewer():
    rng = np.random.default_rng(22)
    fewer = 0
    for _ in range(60):
        masks, level, a, params = random_case(rng)
        st, A = ConceptStore.from_dense(masks, level), Bitmap.from_dense(a)
        fewer += mmesh_search(A, st, **params).visited < beam_search(A, st, **params).visited
    assert fewer > 25


def warm_and_cold(masks, level, a, params, flip=0.1):
    """MMESH on a sibling B of A (some cells flipped) after a search of A left its counts in
    the cache, and again from a fresh cache, and the exhaustive beam: (warm, cold, exact)."""
    st = ConceptStore.from_dense(masks, level)
    b = a ^ (np.random.default_rng(5).random(a.shape) < flip)
    cache = SearchCache()
    mmesh_search(Bitmap.from_dense(a), st, cache=cache, **params)
    B = Bitmap.from_dense(b)
    return (mmesh_search(B, st, cache=cache, **params), mmesh_search(B, st, cache=SearchCache(), **params),
            beam_search(B, st, **params))


@PROPERTY
@given(cases())
def test_mmesh_with_a_warm_cache_equals_beam_search(case):
    """X left in the cache by an earlier search bounds a candidate before its count
    (`search._x_bound`): the beam is still the exhaustive one."""
    warm, cold, exact = warm_and_cold(*case)
    assert summary(warm) == summary(exact) == summary(cold)
    assert (warm.formula, warm.iou, warm.score) == (exact.formula, exact.iou, exact.score)


def test_warm_cache_visits_fewer():
    """A skipped count can cost one later (an equivalent formula, or another operator of the
    same pair, no longer comes free), so fewer visits hold in sum, not case by case."""
    rng = np.random.default_rng(23)
    fewer, warm_sum, cold_sum = 0, 0, 0
    for _ in range(60):
        warm, cold, _ = warm_and_cold(*random_case(rng, length=3, beam=3, start_beam=5, final_beam=1))
        fewer += warm.visited < cold.visited
        warm_sum, cold_sum = warm_sum + warm.visited, cold_sum + cold.visited
    assert fewer > 5 and warm_sum < cold_sum


def test_netdissect_and_guards():
    rng = np.random.default_rng(3)
    masks, level = random_concepts(rng, 6, 10, 6, 6)
    masks[2] = False
    level[2] = False
    st = ConceptStore.from_dense(masks, level)
    a = rng.random((10, 6, 6)) < 0.2
    r = netdissect(Bitmap.from_dense(a), st)
    ious = [dense_iou(masks[c], a) for c in range(6)]
    assert r.formula == leaf(int(np.argmax(ious))) and r.iou == max(ious)
    assert r.visited == 5 and r.visited_compound == 0 and len(r.beam) == 1
    dead = beam_search(Bitmap.empty(10, (6, 6)), st)
    assert dead.dead and dead.formula is None and dead.iou == 0 and dead.beam == ()
    # A touching no concept: a live result with nothing to say
    none = ConceptStore.from_dense(np.zeros((3, 10, 6, 6), bool))
    r = mmesh_search(Bitmap.from_dense(a), none)
    assert not r.dead and r.formula is None and r.iou == 0 and r.beam == ()
    with pytest.raises(ValueError):
        beam_search(Bitmap.from_dense(a[:, :5]), st)


def test_empty_concept_never_wins():
    masks = np.zeros((3, 4, 4, 4), bool)
    masks[0, :2] = True
    a = np.zeros((4, 4, 4), bool)
    a[:2] = True
    st = ConceptStore.from_dense(masks)
    for fn in (beam_search, mmesh_search):
        r = fn(Bitmap.from_dense(a), st, beam=10)
        assert [e.formula.written for e in r.beam] == [leaf(0).written]
        assert r.iou == 1.0


def test_cache_reused_across_units(planted):
    rng, masks, st = planted
    cache = SearchCache()
    units = [Bitmap.from_dense(dense_eval(Formula((2, c), (OR,)), masks)) for c in (5, 6)]
    first = [beam_search(u, st, cache=cache) for u in units]
    assert len(cache.counts.items) > 0 and cache.counts.nbytes <= cache.counts.max_bytes
    again = [beam_search(u, st, cache=cache) for u in units]
    fresh = [mmesh_search(u, st, cache=SearchCache()) for u in units]
    assert [summary(r) for r in first] == [summary(r) for r in again] == [summary(r) for r in fresh]
    tiny = SearchCache(count_bytes=1, region_bytes=1)                   # nothing fits: still right
    assert summary(mmesh_search(units[0], st, cache=tiny)) == summary(first[0])
    other = ConceptStore.from_dense(masks[:5])
    with pytest.raises(ValueError, match="another ConceptStore"):
        beam_search(units[0], other, cache=cache)
    with pytest.raises(ValueError, match="penalty"):
        beam_search(units[0], st, penalty=0)


def test_small_chunks_give_the_same_answers(monkeypatch):
    """The block loops that bound memory at Broden scale, each run over many tiny blocks."""
    import nexplain.compositional.masks as masks_mod
    rng = np.random.default_rng(8)
    cases = [random_case(rng) for _ in range(15)]
    want = [summary(beam_search(Bitmap.from_dense(a), ConceptStore.from_dense(m, lvl), **p))
            for m, lvl, a, p in cases]
    monkeypatch.setattr(masks_mod, "GATHER_BYTES", 1)
    monkeypatch.setattr(masks_mod, "GEOMETRY_BYTES", 1)
    for (m, lvl, a, p), w in zip(cases, want):
        st = ConceptStore.from_dense(m, lvl)
        for fn in (beam_search, mmesh_search):
            assert summary(fn(Bitmap.from_dense(a), st, **p)) == w
