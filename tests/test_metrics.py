"""Explanation metrics on hand-made masks, and label masking with a tiny hand-made unit."""

import numpy as np
import pytest
import torch

from nexplain.compositional.formulas import OPS, evaluate, leaf
from nexplain.compositional.masks import Bitmap, ConceptStore
from nexplain.compositional.metrics import (activation_coverage, detection_accuracy, explanation_coverage,
                                            explanation_metrics, formula_metrics, iou, label_masking,
                                            sample_coverage)

# 4 images of 2 x 2 cells.
A = np.array([[[1, 1], [0, 0]],    # 2 cells
              [[1, 0], [0, 0]],    # 1 cell, misses L
              [[0, 0], [0, 0]],    # empty
              [[0, 0], [0, 1]]],   # 1 cell, hits L
             bool)
L = np.array([[[1, 0], [1, 0]],    # 2 cells, 1 shared with A
              [[0, 1], [0, 0]],    # 1 cell
              [[1, 1], [1, 1]],    # 4 cells, A empty here
              [[0, 0], [0, 1]]],   # 1 cell, shared
             bool)
# |A| = 4, |L| = 8, |A and L| = 2, |A or L| = 10; images: A in 3, L in 4, both hit in 2.
EXPECTED = {"iou": 2 / 10, "detection_accuracy": 2 / 8, "activation_coverage": 2 / 4,
            "sample_coverage": 2 / 4, "explanation_coverage": 2 / 3}


def test_metrics_by_hand():
    m = explanation_metrics(Bitmap.from_dense(A), Bitmap.from_dense(L))
    for name, value in EXPECTED.items():
        assert m[name] == pytest.approx(value), name
    assert (m["intersection"], m["unit_cells"], m["label_cells"]) == (2, 4, 8)
    assert (m["images_both"], m["unit_images"], m["label_images"]) == (2, 3, 4)


def test_single_metric_functions_agree():
    a, l = Bitmap.from_dense(A), Bitmap.from_dense(L)
    for fn in (iou, detection_accuracy, activation_coverage, sample_coverage, explanation_coverage):
        assert fn(a, l) == pytest.approx(EXPECTED[fn.__name__])


def test_metrics_match_dense_computation_on_random_masks():
    rng = np.random.default_rng(0)
    a = rng.random((30, 9, 9)) < 0.05   # 81 cells: two uint64 words per row
    l = rng.random((30, 9, 9)) < 0.2
    l[:5] = False
    m = explanation_metrics(Bitmap.from_dense(a), Bitmap.from_dense(l))
    both = (a & l).reshape(30, -1).any(1)
    assert m["iou"] == pytest.approx((a & l).sum() / (a | l).sum())
    assert m["detection_accuracy"] == pytest.approx((a & l).sum() / l.sum())
    assert m["activation_coverage"] == pytest.approx((a & l).sum() / a.sum())
    assert m["sample_coverage"] == pytest.approx(both.sum() / l.reshape(30, -1).any(1).sum())
    assert m["explanation_coverage"] == pytest.approx(both.sum() / a.reshape(30, -1).any(1).sum())


@pytest.mark.parametrize("a_empty,l_empty", [(True, True), (True, False), (False, True)])
def test_empty_denominators_give_zero(a_empty, l_empty):
    a = Bitmap.empty(4, (2, 2)) if a_empty else Bitmap.from_dense(A)
    l = Bitmap.empty(4, (2, 2)) if l_empty else Bitmap.from_dense(L)
    m = explanation_metrics(a, l)
    assert all(m[name] == 0.0 for name in EXPECTED)


def test_disjoint_images_give_zero_overlap():
    a = Bitmap.from_dense(A[:2], ids=np.array([0, 1]), n_images=4)
    l = Bitmap.from_dense(L[2:], ids=np.array([2, 3]), n_images=4)
    m = explanation_metrics(a, l)
    assert m["iou"] == 0.0 and m["label_images"] == 2 and m["unit_images"] == 2


def test_mismatched_bitmaps_rejected():
    with pytest.raises(ValueError, match="differ"):
        explanation_metrics(Bitmap.empty(4, (2, 2)), Bitmap.empty(4, (3, 2)))


# --- label masking ---------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 7), (19, 30)])
def test_formula_metrics_equal_those_of_the_built_formula(shape):
    rng = np.random.default_rng(3)
    n_c, n = 7, 25
    masks = rng.random((n_c, n) + shape) < rng.uniform(0.05, 0.6, (n_c, 1, 1, 1))
    masks &= rng.random((n_c, n, 1, 1)) < 0.6           # each concept absent from some images
    level = rng.random((n_c, n)) < 0.1                   # and image-level labels
    masks[2] = False                                     # an empty concept
    masks |= level[:, :, None, None]
    st = ConceptStore.from_dense(masks, level)
    a = rng.random((n,) + shape) < 0.3
    a[:3] = False
    A = Bitmap.from_dense(a, n_images=n)
    for _ in range(60):
        f = leaf(int(rng.integers(n_c)))
        for _ in range(rng.integers(0, 4)):
            f = f.extend(OPS[rng.integers(3)], int(rng.integers(n_c)))
        assert formula_metrics(A, f, st) == explanation_metrics(A, evaluate(f, st)), f.written


def unit_fn(x):
    """A tiny 'unit': 2x2 average pooling of a (B, 1, 4, 4) input -> (B, 2, 2)."""
    return x[:, 0].reshape(len(x), 2, 2, 2, 2).mean(axis=(2, 4))


def masking_inputs():
    ones, zeros = np.ones((4, 4), np.float32), np.zeros((4, 4), np.float32)
    left = np.hstack([np.ones((4, 2)), np.zeros((4, 2))]).astype(np.float32)
    images = np.stack([ones, left, ones, ones, zeros])[:, None]
    full, none_, left_half = np.ones((2, 2)), np.zeros((2, 2)), np.array([[1, 0], [1, 0]])
    # masks at 2x2: resized to the 4x4 input by nearest neighbour
    masks = np.stack([full, left_half, none_, left_half, full]).astype(bool)
    return images, masks


def test_label_masking_by_hand():
    images, masks = masking_inputs()
    fires = lambda a: a > 0.5  # noqa: E731  b_n from the clean maps
    # noise fixed at 0 so the masked activations are known exactly
    out = label_masking(unit_fn, images, masks, fires, rng=0, noise=(0.0, 0.0))
    # 0: label is everything -> a' = a -> 1
    # 1: unit fires on the left column only, which sees only the kept left half -> 1
    # 2: empty label, excluded
    # 3: b = all, a = [1,1,1,1], a' = [1,0,1,0] -> 2 / (2 * sqrt 2)
    # 4: unit silent -> b empty -> zero vectors -> 0
    np.testing.assert_allclose(out["per_image"], [1, 1, 1 / np.sqrt(2), 0], rtol=1e-12)
    assert list(out["image_index"]) == [0, 1, 3, 4] and out["n_images"] == 4
    assert out["label_masking"] == pytest.approx((2 + 1 / np.sqrt(2)) / 4)


def test_label_masking_seeded_uniform_noise():
    images, masks = masking_inputs()
    torch_fn = lambda x: torch.from_numpy(unit_fn(x))  # noqa: E731  a tensor is accepted too
    out = label_masking(torch_fn, images, masks, lambda a: a > 0.5, rng=7)
    # the noise of the 4 kept images, drawn in one batch: per 2x2 block of the right half
    u = np.random.default_rng(7).uniform(0, 1, (4, 1, 4, 4)).astype(np.float32)
    right = u[2, 0, :, 2:].reshape(2, 2, 2).mean(axis=(1, 2))  # image 3's right column
    a_masked = np.array([1, right[0], 1, right[1]], np.float64)
    expected = a_masked.sum() / (2 * np.linalg.norm(a_masked))
    assert out["per_image"][2] == pytest.approx(expected, rel=1e-6)
    assert 0.7 < expected < 1
    again = label_masking(torch_fn, images, masks, lambda a: a > 0.5, rng=7, batch_size=2)
    assert again["per_image"][:2] == pytest.approx([1, 1])


def test_label_masking_bitmap_array_and_no_labels():
    images, masks = masking_inputs()
    b = np.zeros((5, 2, 2), bool)
    b[:, :, 0] = True  # left column only: image 3 becomes noise-independent
    out = label_masking(unit_fn, images, masks, b, rng=np.random.default_rng(1))
    np.testing.assert_allclose(out["per_image"], [1, 1, 1, 0], rtol=1e-12)
    none = label_masking(unit_fn, images, np.zeros_like(masks), b)
    assert none["label_masking"] == 0.0 and none["n_images"] == 0
