"""Unit bitmaps: threshold, upsampling, K-means ranges and cluster bitmaps."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nexplain.compositional import bitmaps as nbm, kernels
from nexplain.compositional.bitmaps import (Range, bilinear_axes, cluster_bitmaps, cluster_ranges, fit_clusters,
                                            kernel_matches_torch, quantile_threshold, top_bitmap, upsample)
from nexplain.errors import DataError


def relu_maps(n=20, h=4, w=4, seed=0):
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(size=(n, h, w)), 0).astype(np.float32)


def test_threshold_is_exact_linear_quantile():
    values = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    # linear method: position 999 * 0.995 = 994.005 between 994 and 995
    assert quantile_threshold(values) == pytest.approx(994.005, abs=1e-9)
    rng = np.random.default_rng(1)
    x = rng.gamma(1.0, size=(7, 3, 3)).astype(np.float32)
    assert quantile_threshold(x, 0.9) == np.quantile(x.astype(np.float64), 0.9)


def test_upsample_2x2_to_4x4_by_hand():
    maps = np.array([[[0, 4], [8, 12]]], np.float32)
    # align_corners=False: output pixel centres map to source 0 (clamped), .25, .75, 1 (clamped)
    expected = np.array([[0, 1, 3, 4], [2, 3, 5, 6], [6, 7, 9, 10], [8, 9, 11, 12]], np.float32)
    np.testing.assert_allclose(upsample(maps, (4, 4))[0], expected, atol=1e-6)


def test_upsample_equals_torch_interpolate():
    maps = np.random.default_rng(2).normal(size=(3, 5, 7)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(maps)[:, None], size=(11, 13), mode="bilinear",
                        align_corners=False)[:, 0].numpy()
    np.testing.assert_array_equal(upsample(maps, (11, 13)), ref)


def test_top_bitmap_cells_and_id_order():
    maps = relu_maps(n=6, h=3, w=3)
    ids = np.array([4, 0, 5, 2, 1, 3])  # activations need not come in id order
    bitmap, info = top_bitmap(ids, maps, 6, (7, 5), q=0.9, batch_size=4)
    t = np.quantile(maps.astype(np.float64), 0.9)
    assert info["threshold"] == t
    dense = np.zeros((6, 7, 5), bool)
    dense[ids] = upsample(maps, (7, 5)) > t
    np.testing.assert_array_equal(bitmap.to_dense(), dense)
    assert list(bitmap.ids) == sorted(bitmap.ids)
    assert info["n_cells"] == dense.sum() > 0 and not info["dead"]
    assert bitmap.row_bytes == 8 and bitmap.shape == (7, 5)


def test_images_below_the_floor_are_skipped_exactly():
    """Most images never reach the top quantile, some maps are all zero: skipping them
    before upsampling must not change a cell."""
    rng = np.random.default_rng(3)
    maps = relu_maps(n=60, h=4, w=4)
    maps[rng.random(60) < 0.3] = 0
    ids = rng.permutation(60)
    bitmap, info = top_bitmap(ids, maps, 60, (9, 7), q=0.99, batch_size=7)
    dense = np.zeros((60, 9, 7), bool)
    dense[ids] = upsample(maps, (9, 7)) > np.float32(info["threshold"])
    np.testing.assert_array_equal(bitmap.to_dense(), dense)
    ranges = cluster_ranges(maps, k=3)
    up = np.clip(upsample(maps, (9, 7)), maps.min(), maps.max())
    for r, b in zip(ranges, cluster_bitmaps(ids, maps, 60, (9, 7), ranges, batch_size=7)):
        want = np.zeros((60, 9, 7), bool)
        want[ids] = r.contains(up)
        np.testing.assert_array_equal(b.to_dense(), want)


def test_batching_does_not_change_bitmaps():
    maps = relu_maps(n=13)
    ranges = cluster_ranges(maps, k=3)
    one = cluster_bitmaps(np.arange(13), maps, 13, (9, 9), ranges, batch_size=2)
    all_ = cluster_bitmaps(np.arange(13), maps, 13, (9, 9), ranges, batch_size=100)
    for a, b in zip(one, all_):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.rows, b.rows)


def bounds(ranges):
    return [(r.lo, r.hi) for r in ranges]


SEPARATED = np.array([0, 0, 1.0, 1.1, 1.9, 5.0, 5.1, 5.2, 9.0, 9.1, 9.2], np.float32)


def test_tile_ranges_by_hand():
    ranges, info = fit_clusters(SEPARATED, k=3)
    # zeros dropped; boundaries halfway between 1.9|5.0 and 5.2|9.0 (not between the
    # centres 1.33|5.1|9.1); the top range ends at the max
    np.testing.assert_allclose(bounds(ranges), [(0, 3.45), (3.45, 7.1), (7.1, 9.2)], rtol=1e-6)
    assert all(not r.lo_inclusive and r.hi_inclusive for r in ranges)
    assert [r.n_values for r in ranges] == [3, 3, 3]
    assert info["k_effective"] == 3 and not info["dead"] and info["n_fit"] == 9


def test_strict_ranges_drop_cluster_extremes():
    ranges = cluster_ranges(SEPARATED, k=3, mode="strict")
    np.testing.assert_allclose(bounds(ranges), [(1.0, 1.9), (5.0, 5.2), (9.0, 9.2)], rtol=1e-6)
    kept = [SEPARATED[r.contains(SEPARATED)] for r in ranges]
    assert [list(k) for k in kept] == [[np.float32(1.1)], [np.float32(5.1)], [np.float32(9.1)]]
    for r in ranges:  # a cluster's own min and max are outside its strict range
        assert not r.contains(np.float32(r.lo)) and not r.contains(np.float32(r.hi))


def test_cells_between_clusters_strict_vs_tile():
    maps = np.array([[[1.2, 5.0]], [[1.0, 9.2]], [[1.1, 5.1]], [[9.0, 9.1]]], np.float32)
    # row 0 upsampled to 1x4: 1.2, 2.15, 4.05, 5.0
    np.testing.assert_allclose(upsample(maps[:1], (1, 4))[0, 0], [1.2, 2.15, 4.05, 5.0], rtol=1e-6)
    ids = np.arange(4)
    strict = cluster_bitmaps(ids, maps, 4, (1, 4), cluster_ranges(maps, 3, "strict"))
    tile = cluster_bitmaps(ids, maps, 4, (1, 4), cluster_ranges(maps, 3, "tile"))
    assert not any(b.to_dense()[0].any() for b in strict)  # extremes and in-between cells lost
    np.testing.assert_array_equal(tile[0].to_dense()[0, 0], [True, True, False, False])
    np.testing.assert_array_equal(tile[1].to_dense()[0, 0], [False, False, True, True])


@pytest.mark.parametrize("max_fit", [100_000, 40])
def test_tile_covers_every_active_value_and_cell_once(max_fit):
    maps = relu_maps(n=30, h=4, w=4, seed=3)
    ranges, info = fit_clusters(maps, k=5, max_fit=max_fit)
    assert info["subsampled"] == (max_fit == 40) and info["k_effective"] == 5
    raw = maps.ravel()
    hits = np.stack([r.contains(raw) for r in ranges]).sum(axis=0)
    np.testing.assert_array_equal(hits, (raw > 0).astype(int))
    assert sum(r.n_values for r in ranges) == np.count_nonzero(raw)
    assert [r.lo for r in ranges[1:]] == [r.hi for r in ranges[:-1]]
    assert ranges[0].lo == 0 and ranges[-1].hi == raw.max()
    bitmaps = cluster_bitmaps(np.arange(30), maps, 30, (9, 9), ranges, batch_size=7)
    per_cell = sum(b.to_dense().astype(int) for b in bitmaps)
    np.testing.assert_array_equal(per_cell, (upsample(maps, (9, 9)) > 0).astype(int))


def test_fit_is_deterministic():
    maps = relu_maps(n=40, seed=5)
    assert fit_clusters(maps, max_fit=100, seed=1) == fit_clusters(maps, max_fit=100, seed=1)


def test_k_larger_than_distinct_values():
    values = np.array([0, 1, 2, 2, 1, 0], np.float32)
    ranges, info = fit_clusters(values, k=5)
    assert info["k_effective"] == 2 and info["k"] == 5
    assert [(r.lo, r.hi, r.n_values) for r in ranges] == [(0, 1.5, 2), (1.5, 2, 2)]


def test_zero_and_one_value_is_one_range():
    ranges, info = fit_clusters(np.array([0, 0, 3, 3], np.float32), k=5)
    assert [(r.lo, r.hi, r.n_values) for r in ranges] == [(0, 3, 2)] and not info["dead"]


@pytest.mark.parametrize("value", [0.0, 3.0, -1.0])
def test_constant_unit_is_dead(value):
    maps = np.full((4, 2, 2), value, np.float32)
    ranges, info = fit_clusters(maps)
    assert ranges == [] and info["dead"] and info["k_effective"] == 0
    assert cluster_bitmaps(np.arange(4), maps, 4, (4, 4), ranges) == []
    bitmap, top = top_bitmap(np.arange(4), maps, 4, (4, 4))
    assert bitmap.count() == 0 and len(bitmap.ids) == 0 and top["dead"]


def test_empty_cluster_gives_empty_bitmap():
    maps = relu_maps(n=5)
    [b] = cluster_bitmaps(np.arange(5), maps, 5, (6, 6), [Range(100.0, 200.0, False, True, 0)])
    assert b.count() == 0 and b.n_images == 5 and b.shape == (6, 6)
    assert b.rows.shape == (0, 8) and b.to_dense().shape == (5, 6, 6)


def test_negative_values_keep_zeros_and_tile_min_to_max():
    values = np.array([-2.0, -1.9, 0.0, 0.1, 3.0, 3.1], np.float32)
    ranges, info = fit_clusters(values, k=3)
    assert info["signed"]
    np.testing.assert_allclose(bounds(ranges), [(-2, -0.95), (-0.95, 1.55), (1.55, 3.1)], rtol=1e-6)
    assert ranges[0].lo_inclusive and not ranges[1].lo_inclusive
    assert [r.n_values for r in ranges] == [2, 2, 2]
    maps = values.reshape(3, 1, 2)
    bitmaps = cluster_bitmaps(np.arange(3), maps, 3, (3, 4), ranges)
    per_cell = sum(b.to_dense().astype(int) for b in bitmaps)
    assert (per_cell == 1).all()  # every cell, zeros and negatives included, in one cluster


def test_image_count_mismatch_names_both_counts():
    maps = relu_maps(n=5)
    with pytest.raises(DataError, match=r"5 images.*dataset has 7"):
        top_bitmap(np.arange(5), maps, 7, (4, 4))
    with pytest.raises(DataError, match="not unique"):
        top_bitmap(np.array([0, 1, 1, 2, 3]), maps, 5, (4, 4))
    with pytest.raises(DataError, match="outside"):
        cluster_bitmaps(np.arange(1, 6), maps, 5, (4, 4), cluster_ranges(maps))
    with pytest.raises(DataError, match="4 image ids but hold 5 maps"):
        top_bitmap(np.arange(4), maps, 5, (4, 4))


def test_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        fit_clusters(SEPARATED, mode="loose")


def test_threshold_compared_exactly():
    one = np.float32(1.0)
    up = np.nextafter(one, np.float32(2))
    maps = np.array([one, up], np.float32).reshape(2, 1, 1)
    # the 0.6 quantile is 1 + 0.6 ulp: rounded to float32 it would equal `up` and drop it
    bitmap, info = top_bitmap(np.arange(2), maps, 2, (1, 1), q=0.6)
    assert np.float32(info["threshold"]) == up and list(bitmap.ids) == [1]


def test_tile_boundary_between_adjacent_floats():
    a = np.nextafter(np.float32(1.0), np.float32(2))   # odd mantissa
    b = np.nextafter(a, np.float32(2))                  # even: the float32 tie rounds to b
    ranges = cluster_ranges(np.array([a, b], np.float32), k=2)
    assert [bool(r.contains(a)) for r in ranges] == [True, False]
    assert [bool(r.contains(b)) for r in ranges] == [False, True]


def test_upsampling_rounding_past_the_max_stays_in_top_range():
    maps = np.array([np.full((2, 2), 0.1), [[0, 0.05], [0.02, 0.01]]], np.float32)
    # float32 bilinear of a constant 0.1 map gives some cells one ulp above 0.1
    assert (upsample(maps[:1], (7, 7)) > np.float32(0.1)).any()
    bitmaps = cluster_bitmaps(np.arange(2), maps, 2, (7, 7), cluster_ranges(maps, k=3))
    per_cell = sum(b.to_dense().astype(int) for b in bitmaps)
    np.testing.assert_array_equal(per_cell, (upsample(maps, (7, 7)) > 0).astype(int))


def test_range_contains_on_float32_is_exact():
    rng = np.random.default_rng(4)
    bounds_ = rng.uniform(0.99, 1.01, size=(50, 2))
    a = (1 + (np.arange(-200, 200) * np.finfo(np.float32).eps / 2)).astype(np.float32)
    a = np.concatenate([a, bounds_.ravel().astype(np.float32)])
    for lo, hi in bounds_:
        for lo_inc in (False, True):
            for hi_inc in (False, True):
                r = Range(float(lo), float(hi), lo_inc, hi_inc, 0)
                exact = r.contains(a.astype(np.float64))  # float64 values: exact comparison
                np.testing.assert_array_equal(r.contains(a), exact)


def wide_maps(n, h, w, seed):
    """Maps with wide dynamic range (1e-9 .. 1e9 per map), half ReLU-like (many exact zeros),
    half signed: the cases where float32 roundings differ between formulations."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(n, h, w)) * np.exp(rng.uniform(-20, 20, size=(n, 1, 1)))
    maps[: n // 2] = np.maximum(maps[: n // 2], 0)
    return maps.astype(np.float32)


# (h, w) -> (H, W): integer scales, non-integer ones, 1-wide maps, non-square, identity, downsampling
KERNEL_SHAPES = [(7, 7, 112, 112), (14, 14, 112, 112), (28, 28, 112, 112), (3, 3, 113, 113), (5, 5, 97, 97),
                 (1, 9, 112, 112), (9, 1, 112, 112), (1, 1, 70, 80), (7, 13, 112, 90), (9, 5, 100, 120),
                 (7, 7, 7, 122), (13, 11, 200, 150), (112, 112, 112, 112), (200, 150, 90, 70)]


@pytest.mark.parametrize("h,w,H,W", KERNEL_SHAPES)
def test_bilinear_kernel_equals_torch_bit_for_bit(h, w, H, W):
    maps = wide_maps(40, h, w, seed=h * 1000 + W)
    maps[3] = 0
    maps[4] = np.float32(0.1)  # a constant map: float32 rounding puts some cells past 0.1
    got = kernels.bilinear(maps, *bilinear_axes(h, w, (H, W)))
    ref = F.interpolate(torch.from_numpy(maps)[:, None], size=(H, W), mode="bilinear",
                        align_corners=False)[:, 0].numpy()
    assert np.array_equal(got.reshape(ref.shape), ref)
    assert kernel_matches_torch(h, w, (H, W))


def test_small_outputs_keep_torch():
    """torch upsamples outputs with H + W <= 128 in another kernel, with other roundings."""
    maps = wide_maps(40, 5, 5, seed=0)
    got = kernels.bilinear(maps, *bilinear_axes(5, 5, (37, 37)))
    assert not np.array_equal(got, upsample(maps, (37, 37)).reshape(40, -1))
    assert not kernel_matches_torch(5, 5, (37, 37)) and not kernel_matches_torch(4, 4, (9, 9))


def torch_bitmaps(monkeypatch, fn, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(nbm, "kernel_matches_torch", lambda *a: False)
        return fn(*args, **kwargs)


@pytest.mark.parametrize("mode", ["tile", "strict"])
def test_compiled_bitmaps_equal_torch_bitmaps(monkeypatch, mode):
    """The compiled path (shape (70, 66)) gives the bytes of torch's upsampling + pack_ranges,
    with ids out of order, dead images, signed maps, and the clip at the raw extremes."""
    rng = np.random.default_rng(7)
    maps = wide_maps(60, 5, 6, seed=7)[30:] * np.float32(1e-9)  # signed: ranges cover [min, max]
    relu = relu_maps(n=60, h=5, w=6, seed=8)
    relu[rng.random(60) < 0.3] = 0
    relu[5] = np.float32(0.7)  # a constant map (rounding can put cells past its value)
    shape = (70, 66)  # W * H not a multiple of 8: the last byte is partial
    assert kernel_matches_torch(5, 6, shape)
    for m in (maps, relu):
        ids = rng.permutation(len(m))
        ranges = cluster_ranges(m, k=4, mode=mode)
        fast = cluster_bitmaps(ids, m, len(m), shape, ranges, batch_size=7)
        slow = torch_bitmaps(monkeypatch, cluster_bitmaps, ids, m, len(m), shape, ranges, batch_size=7)
        up = np.clip(upsample(m, shape), m.min(), m.max())
        for r, a, b in zip(ranges, fast, slow):
            np.testing.assert_array_equal(a.ids, b.ids)
            np.testing.assert_array_equal(a.rows, b.rows)
            want = np.zeros((len(m),) + shape, bool)
            want[ids] = r.contains(up)
            np.testing.assert_array_equal(a.to_dense(), want)
        assert sum(b.count() for b in fast) > 0
        (a, info), (b, _) = (top_bitmap(ids, m, len(m), shape, q=0.9),
                             torch_bitmaps(monkeypatch, top_bitmap, ids, m, len(m), shape, q=0.9))
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.rows, b.rows)
        assert info["n_cells"] > 0
