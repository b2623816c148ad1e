"""Explanation metrics of Clustered Compositional Explanations (docs/methods.md).

A is a unit's (or cluster's) Bitmap, L a formula's mask, both over the same images
and grid. Every ratio with an empty denominator is 0.0: an empty formula detects
nothing, an empty unit is covered by nothing.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from nexplain.compositional import kernels
from nexplain.compositional.formulas import Formula
from nexplain.compositional.masks import OPS, Bitmap, ConceptStore, intersect_counts

METRICS = ("iou", "detection_accuracy", "activation_coverage", "sample_coverage",
           "explanation_coverage")


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def explanation_metrics(a: Bitmap, label: Bitmap) -> dict:
    """All five metrics plus the counts behind them, from one aligned pass over both bitmaps."""
    if a.n_images != label.n_images or tuple(a.shape) != tuple(label.shape):
        raise ValueError(f"bitmaps differ: {a.n_images} images of {a.shape} vs "
                         f"{label.n_images} images of {label.shape}")
    a_cells, l_cells = a.per_image(), label.per_image()
    _, inter = intersect_counts(a, label)  # only images both list can intersect
    # Bitmaps keep no empty rows, but count non-empty ones anyway to be safe.
    return _metrics(int(inter.sum()), int(a_cells.sum()), int(l_cells.sum()), int(np.count_nonzero(inter)),
                    int(np.count_nonzero(a_cells)), int(np.count_nonzero(l_cells)))


def formula_metrics(a: Bitmap, f: Formula, store: ConceptStore) -> dict:
    """`explanation_metrics(a, evaluate(f, store))`, the same numbers, without building the
    formula's bitmap: each image's row of it is made, counted and dropped
    (`kernels.formula_counts`)."""
    if a.n_images != store.n_images or tuple(a.shape) != tuple(store.shape):
        raise ValueError(f"bitmaps differ: {a.n_images} images of {a.shape} vs "
                         f"{store.n_images} images of {store.shape}")
    leaves = np.asarray(f.leaves, np.int64)
    ops = np.array([OPS.index(op) for op in f.ops], np.int64)
    a_cells = a.per_image()
    n_l, n_inter, l_images, hit = kernels.formula_counts(
        store.words, kernels.words(store.full_row[None])[0], store.pair_row, store.pair_image, store.ptr[leaves],
        store.ptr[leaves + 1], ops, kernels.words(a.rows), store.positions(a.ids))
    return _metrics(n_inter, int(a_cells.sum()), n_l, hit, int(np.count_nonzero(a_cells)), l_images)


def _metrics(n_inter: int, n_a: int, n_l: int, hit: int, a_images: int, l_images: int) -> dict:
    return {
        "iou": _ratio(n_inter, n_a + n_l - n_inter),
        "detection_accuracy": _ratio(n_inter, n_l),
        "activation_coverage": _ratio(n_inter, n_a),
        "sample_coverage": _ratio(hit, l_images),
        "explanation_coverage": _ratio(hit, a_images),
        "intersection": n_inter, "unit_cells": n_a, "label_cells": n_l,
        "images_both": hit, "unit_images": a_images, "label_images": l_images,
    }


def iou(a: Bitmap, label: Bitmap) -> float:
    """|A and L| / |A or L| over the whole dataset."""
    return explanation_metrics(a, label)["iou"]


def detection_accuracy(a: Bitmap, label: Bitmap) -> float:
    """|A and L| / |L|."""
    return explanation_metrics(a, label)["detection_accuracy"]


def activation_coverage(a: Bitmap, label: Bitmap) -> float:
    """|A and L| / |A|."""
    return explanation_metrics(a, label)["activation_coverage"]


def sample_coverage(a: Bitmap, label: Bitmap) -> float:
    """#{n: A_n and L_n non-empty} / #{n: L_n non-empty}."""
    return explanation_metrics(a, label)["sample_coverage"]


def explanation_coverage(a: Bitmap, label: Bitmap) -> float:
    """#{n: A_n and L_n non-empty} / #{n: A_n non-empty}."""
    return explanation_metrics(a, label)["explanation_coverage"]


def label_masking(unit_fn: Callable, images, masks, unit_mask, rng=0, *,
                  noise: tuple[float, float] = (0.0, 1.0), batch_size: int = 32) -> dict:
    """Label masking: how much of the unit's response the label region alone preserves.

    - unit_fn: maps a (B, C, Hi, Wi) float32 array to the unit's (B, h, w) maps
      (a numpy array or CPU tensor), e.g. a hooked model in inference mode.
    - images: (n, C, Hi, Wi) model inputs; masks: (n, H, W) bool L_n, resized to
      (Hi, Wi) by nearest neighbour when the sizes differ.
    - unit_mask: b_n at feature resolution, a (n, h, w) bool array or a callable
      mapping the clean maps a_n to it (e.g. `lambda a: a > threshold`).
    - rng: a numpy Generator or a seed; noise ~ Uniform[noise) per input value.

    a'_n = unit_fn(image kept on L_n, noise elsewhere). Returns {"label_masking": mean over
    images with L_n non-empty of cos(a_n * b_n, a'_n * b_n), "n_images", "per_image",
    "image_index" (positions in `images` of those images)}.
    A zero vector has cosine 0 with anything (torch's convention), so an image whose
    b_n is empty scores 0; no image with L_n non-empty gives 0.0.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    images = np.asarray(images, dtype=np.float32)
    masks = np.asarray(masks, dtype=bool)
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    keep = np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1))
    scores = []
    for start in range(0, len(keep), batch_size):
        idx = keep[start:start + batch_size]
        x = images[idx]
        m = _resize_nearest(masks[idx], x.shape[-2:])[:, None]  # broadcast over channels
        u = rng.uniform(noise[0], noise[1], size=x.shape).astype(np.float32)
        clean = _numpy(unit_fn(x))
        masked = _numpy(unit_fn(np.where(m, x, u)))
        b = unit_mask(clean) if callable(unit_mask) else np.asarray(unit_mask, bool)[idx]
        scores.append(_cosine(clean * b, masked * b))
    per_image = np.concatenate(scores) if scores else np.zeros(0)
    mean = float(per_image.mean()) if len(per_image) else 0.0
    return {"label_masking": mean, "n_images": int(len(per_image)), "per_image": per_image,
            "image_index": keep}


def _cosine(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise cosine of flattened maps; 0 where either is the zero vector."""
    x = x.reshape(len(x), -1).astype(np.float64)
    y = y.reshape(len(y), -1).astype(np.float64)
    norm = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    dot = (x * y).sum(axis=1)
    return np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0)


def _resize_nearest(masks: np.ndarray, size) -> np.ndarray:
    if masks.shape[-2:] == tuple(size):
        return masks
    import torch  # torch on use: the jobs that only merge or plot start ~2 s sooner
    import torch.nn.functional as F

    t = torch.from_numpy(masks.astype(np.float32))[:, None]
    return F.interpolate(t, size=tuple(size), mode="nearest")[:, 0].numpy() > 0.5


def _numpy(maps) -> np.ndarray:
    if hasattr(maps, "detach"):  # a torch tensor
        maps = maps.detach().cpu().numpy()
    return np.asarray(maps, dtype=np.float64)
