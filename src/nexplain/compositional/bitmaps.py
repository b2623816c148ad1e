"""A unit's activation maps turned into `Bitmap`s over the concept-mask grid (docs/methods.md).

- `top_bitmap`: NetDissect/CoEx cells, upsampled value > the unit's 0.995 quantile.
- `cluster_ranges` + `cluster_bitmaps`: Clustered Compositional Explanations, one bitmap
  per K-means activation range.

Maps are upsampled (bilinear, align_corners=False) as torch's `F.interpolate` does:
by a compiled kernel that reproduces torch's float32 roundings and classifies each
image's cells as it goes (`kernels.bilinear_pack_ranges`), or, at sizes where it would
not match torch bit for bit, by torch itself a batch of images at a time. Either way
memory stays bounded by a batch and the output bitmaps, whatever the image count.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
import numpy as np

from nexplain.compositional import kernels
from nexplain.compositional.masks import Bitmap
from nexplain.data.concepts import row_bytes_for
from nexplain.errors import DataError

TOP_QUANTILE = 0.995
MODES = ("tile", "strict")
BATCH = 256          # images upsampled at once: 256 x 112 x 112 float32 = 12.8 MB
MAX_FIT = 100_000    # values K-means is fitted on; more gives the same centres, slower
N_INIT = 4           # K-means restarts (fixed, with random_state, for determinism)


@dataclass(frozen=True)
class Range:
    """An activation range; `n_values` = raw (feature-resolution) values of its cluster."""

    lo: float
    hi: float
    lo_inclusive: bool
    hi_inclusive: bool
    n_values: int

    def contains(self, a: np.ndarray) -> np.ndarray:
        return self.above(a) & self.below(a)

    def above(self, a: np.ndarray) -> np.ndarray:
        """a past the lower bound (exactly, whatever a's float dtype)."""
        a = np.asarray(a)
        lo = exact_bound(self.lo, a.dtype, up=self.lo_inclusive)        # a >= ceil, a > floor
        return a >= lo if self.lo_inclusive else a > lo

    def below(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        hi = exact_bound(self.hi, a.dtype, up=not self.hi_inclusive)    # a <= floor, a < ceil
        return a <= hi if self.hi_inclusive else a < hi


def exact_bound(x: float, dtype, up: bool):
    """x as a scalar that compares with `dtype` values exactly as x itself would.

    A Python float is rounded to nearest float32 before comparing with a float32 array,
    which can flip values next to x; a float64 scalar is exact but casts the whole array
    (4x slower). So round x towards the side that keeps the comparison exact: for
    float32 a, `a > x` iff `a > floor32(x)`, `a >= x` iff `a >= ceil32(x)`.
    """
    if dtype != np.float32:
        return np.float64(x)
    y = np.float32(x)
    if up and float(y) < x:
        y = np.nextafter(y, np.float32(np.inf))
    elif not up and float(y) > x:
        y = np.nextafter(y, np.float32(-np.inf))
    return y


def quantile_threshold(values, q: float = TOP_QUANTILE) -> float:
    """The exact q-quantile of all values (numpy's default "linear" method, in float64)."""
    values = np.asarray(values).ravel()
    if values.size == 0:
        raise DataError("no activation values to take a quantile of")
    return float(np.quantile(values.astype(np.float64), q))


def upsample(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(n, h, w) -> (n, H, W) float32, bilinear with align_corners=False."""
    import torch  # torch on use: the jobs that only merge or plot start ~2 s sooner
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    out = F.interpolate(x, size=tuple(shape), mode="bilinear", align_corners=False)
    return out[:, 0].numpy()


def bilinear_axes(h: int, w: int, shape) -> tuple[tuple, tuple]:
    """`kernels.bilinear_axis` of the rows and of the columns of an (h, w) -> shape upsampling."""
    return kernels.bilinear_axis(h, int(shape[0])), kernels.bilinear_axis(w, int(shape[1]))


@lru_cache(maxsize=None)
def kernel_matches_torch(h: int, w: int, shape: tuple[int, int]) -> bool:
    """Whether `kernels.bilinear` equals `upsample` (torch) bit for bit at these sizes.

    The kernel follows torch's generic CPU kernel (kernels.py). torch sends outputs with
    H + W <= 128 to its channels-last kernel instead, which rounds differently; and a
    torch build whose kernel does not fuse multiply-adds would round differently too. A
    probe on maps with zeros and a wide dynamic range catches that (when the roundings
    differ, thousands of its cells do)."""
    if shape[0] + shape[1] <= 128:
        return False
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(8, h, w)) * np.exp(rng.uniform(-20, 20, size=(8, 1, 1)))
    maps = np.where(np.arange(8)[:, None, None] < 4, np.maximum(maps, 0), maps).astype(np.float32)
    got = kernels.bilinear(maps, *bilinear_axes(h, w, shape))
    return bool(np.array_equal(got, upsample(maps, shape).reshape(len(maps), -1)))


def top_bitmap(image_ids, maps, n_images: int, mask_shape, q: float = TOP_QUANTILE, *,
               threshold: float | None = None, batch_size: int = BATCH) -> tuple[Bitmap, dict]:
    """Cells whose upsampled activation is > the unit's q-quantile (or `threshold`)."""
    t = quantile_threshold(maps, q) if threshold is None else float(threshold)
    [bitmap] = _bitmaps(image_ids, maps, n_images, mask_shape, [Range(t, np.inf, False, True, 0)], batch_size)
    dead = bool(np.min(maps) == np.max(maps)) if np.size(maps) else True
    info = {"threshold": t, "q": q, "n_cells": bitmap.count(), "n_images_active": len(bitmap.ids),
            "dead": dead}
    return bitmap, info


def fit_clusters(values, k: int = 5, mode: str = "tile", seed: int = 0, *,
                 max_fit: int = MAX_FIT, n_init: int = N_INIT) -> tuple[list[Range], dict]:
    """K-means activation ranges of one unit (docs/methods.md), sorted by value, plus an info dict.

    Values are taken as float32 (the activations' dtype); zeros are dropped when no
    value is negative. K-means is fitted on at most `max_fit`
    values (a seeded random subsample without replacement); every value is then assigned
    to its nearest centre, and each cluster's min/max/size come from all values.
    `tile`: ranges tile (0, max] (or [min, max] with negative values), boundaries halfway
    between neighbouring clusters' extremes, each (lo, hi]; the lowest is [min, b] when
    values can be negative. `strict` (the reference): (cluster min, cluster max), open.
    A constant unit (all zeros, or one value) gives no ranges and info["dead"] = True.
    """
    if mode not in MODES:
        raise ValueError(f"unknown cluster mode {mode!r}; valid: {', '.join(MODES)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    values = np.asarray(values, dtype=np.float32).ravel()
    if not np.all(np.isfinite(values)):
        raise DataError("activation values contain NaN or inf")
    info = {"k": k, "mode": mode, "seed": seed, "k_effective": 0, "dead": True,
            "n_values": int(values.size), "n_fit": 0, "subsampled": False, "centres": []}
    if values.size == 0 or values.min() == values.max():
        return [], info
    signed = bool(values.min() < 0)
    x = values if signed else values[values != 0]
    fit = x
    if x.size > max_fit:  # 12M values would make K-means slow; ranges still use all values
        fit = x[np.sort(np.random.default_rng(seed).choice(x.size, max_fit, replace=False))]
    centres = _centres(fit.astype(np.float64), k, seed, n_init)
    # Nearest centre in 1-D: cut at the midpoints between sorted centres.
    labels = np.searchsorted((centres[1:] + centres[:-1]) / 2, x)
    lows, highs, sizes = [], [], []
    for j in range(len(centres)):
        member = x[labels == j]
        if member.size:  # a centre can lose all its points only through exact ties
            lows.append(float(member.min()))
            highs.append(float(member.max()))
            sizes.append(int(member.size))
    if mode == "strict":
        ranges = [Range(lo, hi, False, False, n) for lo, hi, n in zip(lows, highs, sizes)]
    else:
        cuts = [(h + l) / 2 for h, l in zip(highs[:-1], lows[1:])]
        bounds = [lows[0] if signed else 0.0] + cuts + [highs[-1]]
        ranges = [Range(bounds[i], bounds[i + 1], signed and i == 0, True, sizes[i])
                  for i in range(len(sizes))]
    info.update(k_effective=len(ranges), dead=False, signed=signed, n_fit=int(fit.size),
                subsampled=bool(fit.size < x.size), centres=[float(c) for c in centres])
    return ranges, info


def cluster_ranges(values, k: int = 5, mode: str = "tile", seed: int = 0, **kwargs) -> list[Range]:
    """The ranges of `fit_clusters` alone."""
    return fit_clusters(values, k, mode, seed, **kwargs)[0]


def cluster_bitmaps(image_ids, maps, n_images: int, mask_shape, ranges: list[Range], *,
                    batch_size: int = BATCH) -> list[Bitmap]:
    """One Bitmap per range, from a single pass over the upsampled maps."""
    if not ranges:
        return []
    # Bilinear values are convex combinations of raw values; clipping to the raw extremes
    # only removes float32 rounding past them, which would drop cells from the top range.
    return _bitmaps(image_ids, maps, n_images, mask_shape, ranges, batch_size, clip=True)


def _centres(fit: np.ndarray, k: int, seed: int, n_init: int) -> np.ndarray:
    """Sorted K-means centres; with <= k distinct values, the distinct values themselves."""
    distinct = np.unique(fit)
    if distinct.size <= k:  # K-means could only reproduce them (and warns)
        return distinct
    from sklearn.cluster import KMeans  # slow import, only needed here
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(fit[:, None])
    return np.sort(km.cluster_centers_.ravel())


def check_image_ids(image_ids, n_maps: int, n_images: int) -> np.ndarray:
    """Validate activation image ids against the dataset; return them as int64."""
    ids = np.asarray(image_ids, dtype=np.int64).ravel()
    if len(ids) != n_maps:
        raise DataError(f"activations list {len(ids)} image ids but hold {n_maps} maps")
    if len(ids) != n_images:
        raise DataError(f"activations cover {len(ids)} images but the dataset has {n_images}; "
                        "extract activations on this dataset")
    if len(ids) and (ids.min() < 0 or ids.max() >= n_images):
        raise DataError(f"activation image ids span {ids.min()}..{ids.max()}, outside the "
                        f"dataset's 0..{n_images - 1}")
    if len(np.unique(ids)) != len(ids):
        raise DataError("activation image ids are not unique")
    return ids


def _bounds(ranges: list[Range]) -> tuple[np.ndarray, np.ndarray]:
    """Strict float32 bounds per range: value in range iff lo < value < hi, exactly
    (`exact_bound`, then a closed bound moves one float32 outwards)."""
    down, up = np.float32(-np.inf), np.float32(np.inf)
    lo = [np.nextafter(exact_bound(r.lo, np.float32, up=True), down) if r.lo_inclusive
          else exact_bound(r.lo, np.float32, up=False) for r in ranges]
    hi = [np.nextafter(exact_bound(r.hi, np.float32, up=False), up) if r.hi_inclusive
          else exact_bound(r.hi, np.float32, up=True) for r in ranges]
    return np.array(lo, np.float32), np.array(hi, np.float32)


def _bitmaps(image_ids, maps, n_images, mask_shape, ranges: list[Range], batch_size,
             clip: bool = False) -> list[Bitmap]:
    """One Bitmap per range of the upsampled values, images in id order; `clip`: values
    clipped to the raw extremes first. Images whose raw maximum is below every range are
    skipped (bilinear values are convex combinations of raw ones; the slack covers
    float32 rounding, so the result is the same as without skipping)."""
    maps = np.asarray(maps, dtype=np.float32)  # what upsampling computes in
    if maps.ndim != 3:
        raise DataError(f"unit maps must be (n, h, w), got shape {maps.shape}")
    ids = check_image_ids(image_ids, len(maps), n_images)
    shape = (int(mask_shape[0]), int(mask_shape[1]))
    words = row_bytes_for(shape) // 8
    bounds = _bounds(ranges)
    lo, hi = ((np.min(maps), np.max(maps)) if clip and maps.size else (-np.inf, np.inf))
    order = np.argsort(ids, kind="stable")
    floor = float(bounds[0].min())
    if maps.size:
        top = maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)[order]
        order = order[top >= floor - 1e-6 * (abs(floor) + np.abs(top))]
    # One buffer per range, sized for every image: np.empty pages become resident only
    # when written, and unlike many per-batch parts they leave no holes in the heap.
    out_ids = [np.empty(len(ids), np.int64) for _ in ranges]
    out_rows = [np.empty((len(ids), words), np.uint64) for _ in ranges]
    clip_lo, clip_hi = np.float32(lo), np.float32(hi)
    if maps.size and kernel_matches_torch(maps.shape[1], maps.shape[2], shape):
        axes = bilinear_axes(maps.shape[1], maps.shape[2], shape)
        filled = kernels.bilinear_bitmaps(maps, order, *axes, *bounds, clip_lo, clip_hi, ids, tuple(out_ids),
                                          tuple(r.view(np.uint8) for r in out_rows))
    else:
        filled = _fill_by_torch(maps, ids, order, shape, bounds, clip_lo, clip_hi, out_ids, out_rows, batch_size)
    # The filled heads, not copies: the tails were never written, so they hold no memory
    return [Bitmap(i[:f], r[:f].view(np.uint8), n_images, shape)
            for i, r, f in zip(out_ids, out_rows, map(int, filled))]


def _fill_by_torch(maps, ids, order, shape, bounds, clip_lo, clip_hi, out_ids, out_rows, batch_size):
    """`kernels.bilinear_bitmaps` with torch's upsampling, a batch of images at a time."""
    filled = [0] * len(out_ids)
    packed = np.empty((len(out_ids), batch_size, out_rows[0].shape[1] * 8), np.uint8)
    in_order = len(order) == len(ids) and bool(np.all(order == np.arange(len(ids))))
    for start in range(0, len(order), batch_size):
        sel = slice(start, start + batch_size) if in_order else order[start:start + batch_size]
        up = upsample(maps[sel], shape)
        n = len(up)
        keep = kernels.pack_ranges(up.reshape(n, -1), *bounds, clip_lo, clip_hi, packed[:, :n])
        batch_ids = ids[sel]
        for j in range(len(out_ids)):
            f, k = filled[j], int(keep[j].sum())
            out_ids[j][f:f + k] = batch_ids[keep[j]]
            out_rows[j][f:f + k] = packed[j, :n][keep[j]].view(np.uint64)
            filled[j] = f + k
    return filled
