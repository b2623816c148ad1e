"""ConceptStore, bitmap set operations and mask geometry against dense numpy."""

import numpy as np
import pytest

from broden_fixture import CONCEPT_NUMBERS, IMAGE_LEVEL_NUMBERS, IMAGES, SH, SW, write_broden_fixture
from nexplain.compositional.masks import (AND, AND_NOT, OR, Bitmap, ConceptStore, Region, bitmap_and,
                                          bitmap_andnot, bitmap_or, combine, intersect_counts, mask_geometry)
from nexplain.data.broden import open_broden
from nexplain.data.concepts import PackedMasks, build_concept_tables


def random_concepts(rng, n_concepts, n_images, h, w):
    """(dense masks C x N x H x W with image-level pairs filled in, image_level C x N).

    Mixes rectangles (for meaningful boxes), sparse random cells, image-level labels and
    an empty concept, so every code path of the store is exercised.
    """
    masks = np.zeros((n_concepts, n_images, h, w), bool)
    level = np.zeros((n_concepts, n_images), bool)
    for c in range(n_concepts):
        kind = rng.choice(["rect", "rect", "sparse", "level", "empty"], p=[.35, .25, .2, .12, .08])
        present = rng.random(n_images) < rng.uniform(0.2, 0.8)
        for n in np.flatnonzero(present):
            if kind == "rect":
                r0, c0 = rng.integers(0, h), rng.integers(0, w)
                masks[c, n, r0:rng.integers(r0 + 1, h + 1), c0:rng.integers(c0 + 1, w + 1)] = True
            elif kind == "sparse":
                masks[c, n] = rng.random((h, w)) < 0.15
            elif kind == "level":
                level[c, n] = True
    return masks | level[:, :, None, None], level


def dense_box(m):
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)


def largest_square(m):
    h, w = m.shape
    best = 0
    for r in range(h):
        for c in range(w):
            s = best + 1
            while r + s <= h and c + s <= w and m[r:r + s, c:c + s].all():
                best, s = s, s + 1
    return best


def check_geometry(region: Region, dense: np.ndarray):
    """Boxes contain every cell; rectangles are all-ones; listed images are exactly the set ones."""
    assert region.bitmap.ids.tolist() == np.flatnonzero(dense.any((1, 2))).tolist()
    for n, b, r in zip(region.bitmap.ids, region.box, region.rect):
        m = dense[n]
        inside = np.zeros_like(m)
        inside[b[0]:b[2], b[1]:b[3]] = True
        assert not (m & ~inside).any()
        assert r[2] >= r[0] and r[3] >= r[1]
        assert m[r[0]:r[2], r[1]:r[3]].all()


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(7)
    masks, level = random_concepts(rng, 9, 14, 7, 9)  # 63 cells: rows padded to 8 bytes
    masks[4] = False
    level[4] = False                                    # one empty concept for sure
    return masks, level, ConceptStore.from_dense(masks, level)


def test_store_counts_and_bitmaps(world):
    masks, level, st = world
    assert st.sizes.tolist() == masks.sum((1, 2, 3)).tolist()
    assert st.sizes[4] == 0 and len(st.images(4)) == 0
    for c in range(len(masks)):
        assert st.images(c).tolist() == np.flatnonzero(masks[c].any((1, 2))).tolist()
        np.testing.assert_array_equal(st.bitmap(c).to_dense(), masks[c])
    for n in range(masks.shape[1]):  # image-major index lists the concepts present in image n
        got = st.pair_concept[st.img_pairs[st.img_ptr[n]:st.img_ptr[n + 1]]]
        assert sorted(got.tolist()) == np.flatnonzero(masks[:, n].any((1, 2))).tolist()


def test_store_intersections(world):
    masks, _, st = world
    rng = np.random.default_rng(1)
    a = rng.random(masks.shape[1:]) < 0.3
    a[3] = False
    b = Bitmap.from_dense(a)
    want = (masks & a).sum((2, 3))                              # (C, N)
    assert st.counts(b).tolist() == want.sum(1).tolist()
    pairs, counts = st.pair_counts(b)
    got = np.zeros_like(want)
    got[st.pair_concept[pairs], st.pair_image[pairs]] = counts
    np.testing.assert_array_equal(got, want)
    assert set(st.pair_image[pairs].tolist()) <= set(b.ids.tolist())
    a2 = rng.random(masks.shape[1:]) < 0.5
    b2 = Bitmap.from_dense(a2)
    many = st.pair_counts_many([b, b2, Bitmap.empty(*a.shape[:1], a.shape[1:])])
    for got, bm in zip(many, [b, b2]):
        want_p, want_c = st.pair_counts(bm)
        assert np.array_equal(got[0], want_p) and np.array_equal(got[1], want_c)
    assert len(many[2][0]) == 0


def test_store_geometry(world):
    masks, level, st = world
    h, w = masks.shape[2:]
    for c in range(len(masks)):
        reg = st.region(c)
        check_geometry(reg, masks[c])
        for n, b, r in zip(reg.bitmap.ids, reg.box, reg.rect):
            assert tuple(b) == dense_box(masks[c, n])
            if level[c, n]:  # image-level: the rectangle is the whole image, not a square
                assert tuple(b) == tuple(r) == (0, 0, h, w)
            else:
                assert (r[2] - r[0]) == (r[3] - r[1]) == largest_square(masks[c, n])


def test_store_meets_matches_dense(world):
    masks, level, st = world
    flat = masks.reshape(len(masks), -1)
    want = (flat.astype(np.int64) @ flat.T.astype(np.int64)) > 0  # image-level masks are filled in
    assert st.meets.dtype == bool and (st.meets == want).all()
    assert 0 < want.sum() < want.size  # the fixture has both meeting and disjoint pairs
    again = ConceptStore(st.n_images, st.shape, st.pair_concept, st.pair_image, st.pair_row, st.area,
                         st.bits, st.n_concepts, st.geometry())
    assert again.meets is st.meets  # a saved matrix is used, not recomputed


def test_mask_geometry_shapes():
    m = np.zeros((3, 6, 7), bool)
    m[0, 1:5, 2:5] = True          # 4x3 block: square 3
    m[0, 4, 6] = True
    m[1, 0, :] = True              # a line: square 1
    box, rect = mask_geometry(m)
    assert box.tolist() == [[1, 2, 5, 7], [0, 0, 1, 7], [0, 0, 0, 0]]
    assert rect[0, 2] - rect[0, 0] == 3 and m[0, rect[0, 0]:rect[0, 2], rect[0, 1]:rect[0, 3]].all()
    assert rect[1, 2] - rect[1, 0] == 1 and rect[2].tolist() == [0, 0, 0, 0]
    rng = np.random.default_rng(3)
    r = rng.random((40, 9, 5)) < 0.7
    _, rect = mask_geometry(r)
    assert [int(x[2] - x[0]) for x in rect] == [largest_square(x) for x in r]


def test_bitmap_set_ops():
    rng = np.random.default_rng(2)
    for _ in range(20):
        a, b = (rng.random((12, 5, 6)) < rng.uniform(0, 0.3) for _ in range(2))
        a[rng.random(12) < 0.4] = False
        b[rng.random(12) < 0.4] = False
        ba, bb = Bitmap.from_dense(a), Bitmap.from_dense(b)
        for fn, want in ((bitmap_and, a & b), (bitmap_or, a | b), (bitmap_andnot, a & ~b)):
            out = fn(ba, bb)
            np.testing.assert_array_equal(out.to_dense(), want)
            assert out.ids.tolist() == np.flatnonzero(want.any((1, 2))).tolist()  # no empty rows
        ids, counts = intersect_counts(ba, bb)
        both = a.any((1, 2)) & b.any((1, 2))
        assert ids.tolist() == np.flatnonzero(both).tolist()
        assert counts.tolist() == (a & b).sum((1, 2))[both].tolist()


def test_combined_geometry_stays_valid(world):
    masks, _, st = world
    rng = np.random.default_rng(4)
    ops = {OR: np.logical_or, AND: np.logical_and, AND_NOT: lambda x, y: x & ~y}
    for _ in range(40):
        cs = rng.integers(0, len(masks), 4)
        reg, dense = st.region(cs[0]), masks[cs[0]]
        for c in cs[1:]:
            op = rng.choice(list(ops))
            reg, dense = combine(reg, op, st.region(c)), ops[op](dense, masks[c])
            check_geometry(reg, dense)
            np.testing.assert_array_equal(reg.bitmap.to_dense(), dense)


def unit_of(rng, masks):
    """A random unit bitmap whose images include every case `unit_counts` takes apart:
    A inside a concept, A missing it, A inside a formula, and random cells."""
    a = rng.random(masks.shape[1:]) < 0.3
    for n in range(a.shape[0]):
        c = rng.integers(0, len(masks))
        kind = rng.integers(0, 4)
        if kind == 0:
            a[n] &= masks[c, n]       # A_n within c_n
        elif kind == 1:
            a[n] &= ~masks[c, n]      # A_n misses c_n
        elif kind == 2:
            a[n] = masks[c, n] & (rng.random(a.shape[1:]) < 0.7)
    a[0] = False
    return a


@pytest.mark.parametrize("shape", [(7, 9), (20, 37)])  # rows of one word, and of several
def test_unit_counts_against_dense(shape):
    rng = np.random.default_rng(11)
    masks, level = random_concepts(rng, 8, 16, *shape)
    st = ConceptStore.from_dense(masks, level)
    ops = {OR: np.logical_or, AND: np.logical_and, AND_NOT: lambda x, y: x & ~y}
    for _ in range(12):
        a = unit_of(rng, masks)
        A = Bitmap.from_dense(a)
        units = [st.unit_cells(A, st.pair_counts(A)), st.unit_cells(A)]  # per-pair counts given, or counted
        cs = rng.integers(0, len(masks), rng.integers(1, 4))
        reg, dense = st.region(cs[0]), masks[cs[0]]
        for c in cs[1:]:
            op = rng.choice(list(ops))
            reg, dense = combine(reg, op, st.region(c)), ops[op](dense, masks[c])
        if rng.random() < 0.3:  # A inside the formula in some images
            a[1:4] = dense[1:4]
            A = Bitmap.from_dense(a)
            units = [st.unit_cells(A, st.pair_counts(A)), st.unit_cells(A)]
        for unit in units:
            il = st.overlaps(unit, reg)
            np.testing.assert_array_equal(il, (a & dense).sum((1, 2)))
            for c in range(len(masks)):
                want = (int((masks[c] & dense).sum()), int((masks[c] & dense & a).sum()))
                assert st.unit_counts(c, reg, unit, il) == want
                assert st.unit_counts(c, reg, unit, il, count_x=False) == (0, want[1])


def test_store_from_packed_broden(tmp_path):
    fx = write_broden_fixture(tmp_path / "broden")
    build_concept_tables(open_broden(fx.root), tmp_path / "concepts", progress=False)
    pm = PackedMasks(tmp_path / "concepts" / "masks")
    st = ConceptStore.from_packed(pm)
    assert (st.n_images, st.n_concepts, st.shape) == (len(IMAGES), len(CONCEPT_NUMBERS), (SH, SW))
    dense = np.stack([pm.dense(c) for c in range(pm.n_concepts)])
    assert st.sizes.tolist() == dense.sum((1, 2, 3)).tolist()
    for c in range(pm.n_concepts):
        np.testing.assert_array_equal(st.bitmap(c).to_dense(), dense[c])
        check_geometry(st.region(c), dense[c])
    for number in IMAGE_LEVEL_NUMBERS:  # scene/texture labels: whole images
        reg = st.region(CONCEPT_NUMBERS.index(number))
        assert len(reg.box) and (reg.box == (0, 0, SH, SW)).all() and (reg.rect == reg.box).all()
    assert st.sizes[CONCEPT_NUMBERS.index(13)] == 0                 # "unused" has no pixels
    a = np.zeros((len(IMAGES), SH, SW), bool)
    a[0, :3, :5] = a[2, 2:6, 1:4] = a[4, 7, 7] = True
    want = (dense & a).sum((1, 2, 3))
    assert st.counts(Bitmap.from_dense(a)).tolist() == want.tolist()
    again = ConceptStore.from_packed(pm, geometry=st.geometry())   # saved geometry is reused
    assert again.box is st.box and again.rect is st.rect
