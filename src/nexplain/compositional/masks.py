"""Boolean masks over N x H x W cells, stored sparsely: packed rows only for images where set.

A `Bitmap` is the common currency of the explainers: a unit's active cells, a cluster
range, a concept, a formula. Rows use the layout of `nexplain.data.concepts` (bit order
"big", `row_bytes` a multiple of 8, so rows view as uint64 words for popcounts).

Also here: set operations between bitmaps restricted to the images where the result
can be set; `Region` (a bitmap with per-image bounding boxes and all-ones rectangles,
the geometry MMESH bounds need); `ConceptStore`, the search-side view of all
concept masks with per-(concept, image) statistics and an image-major index; and
`UnitCells`, a unit's bitmap indexed for the store's per-concept counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nexplain.compositional import kernels
from nexplain.data.concepts import BITORDER, pack_masks, row_bytes_for


@dataclass(frozen=True)
class Bitmap:
    """Cells set over n_images images of shape (H, W); `ids` sorted, one packed row per id, no empty rows."""

    ids: np.ndarray  # (k,) int64, sorted, unique
    rows: np.ndarray  # (k, row_bytes) uint8
    n_images: int
    shape: tuple[int, int]

    @property
    def row_bytes(self) -> int:
        return row_bytes_for(self.shape)

    @classmethod
    def empty(cls, n_images: int, shape: tuple[int, int]) -> Bitmap:
        return cls(np.zeros(0, np.int64), np.zeros((0, row_bytes_for(shape)), np.uint8), n_images, tuple(shape))

    @classmethod
    def from_dense(cls, dense: np.ndarray, ids: np.ndarray | None = None, n_images: int | None = None) -> Bitmap:
        """From bool (k, H, W) masks of images `ids` (default 0..k-1); empty images are dropped."""
        dense = np.asarray(dense, dtype=bool)
        ids = np.arange(len(dense)) if ids is None else np.asarray(ids, dtype=np.int64)
        keep = dense.reshape(len(dense), -1).any(axis=1)
        shape = tuple(dense.shape[1:])
        rows = pack_masks(dense[keep], row_bytes_for(shape))
        n = len(dense) if n_images is None else n_images
        return cls(ids[keep].astype(np.int64), rows, n, shape)

    def to_dense(self) -> np.ndarray:
        """Bool (n_images, H, W): small sets only."""
        h, w = self.shape
        out = np.zeros((self.n_images, h * w), dtype=bool)
        out[self.ids] = np.unpackbits(self.rows, axis=1, count=h * w, bitorder=BITORDER).view(bool)
        return out.reshape(self.n_images, h, w)

    def per_image(self) -> np.ndarray:
        """Set cells per listed image, aligned with `ids`."""
        return popcount_rows(self.rows)

    def count(self) -> int:
        return int(self.per_image().sum())


GATHER_BYTES = 1 << 20  # packed rows per gather chunk: fits in L2 beside its temporaries


def popcount_rows(rows: np.ndarray) -> np.ndarray:
    """Set bits per packed row, as int64."""
    return kernels.popcounts(kernels.words(rows))


# --- set operations between bitmaps, restricted to the images where the result can be set ---

OR, AND, AND_NOT = "OR", "AND", "AND NOT"
OPS = (OR, AND, AND_NOT)  # this order is the op order of candidate arrays and of tie-breaks


def match_sorted(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (ix, iy) with x[ix] == y[iy], for sorted unique x, y; binary-searches the shorter."""
    if len(x) > len(y):
        iy, ix = match_sorted(y, x)
        return ix, iy
    pos = np.minimum(np.searchsorted(y, x), max(len(y) - 1, 0))
    hit = np.flatnonzero(y[pos] == x) if len(y) else np.zeros(0, np.int64)
    return hit, pos[hit]


def _and_rows(a: Bitmap, b: Bitmap):
    """(ids, words, ia, ib) of a AND b over the images both list, empty rows dropped; ia, ib:
    the kept rows' positions in a and in b. Output buffers come from numpy (see kernels)."""
    wa = kernels.words(a.rows)
    ia, ib = kernels.matches(a.ids, b.ids)
    out = np.empty((len(ia), wa.shape[1]), np.uint64)
    k = kernels.and_rows(wa, kernels.words(b.rows), ia, ib, out)
    return a.ids[ia[:k]], out[:k], ia[:k], ib[:k]


def _andnot_rows(a: Bitmap, b: Bitmap):
    """(ids, words, kept positions in a) of a AND NOT b over a's images, empty rows dropped."""
    wa = kernels.words(a.rows)
    ia, ib = kernels.matches(a.ids, b.ids)
    out = np.empty_like(wa)
    keep = kernels.andnot_rows(wa, kernels.words(b.rows), ia, ib, out)
    return a.ids[keep], out[:len(keep)], keep


def bitmap_and(a: Bitmap, b: Bitmap) -> Bitmap:
    """a AND b, over the images both list."""
    ids, rows, _, _ = _and_rows(a, b)
    return Bitmap(ids, rows.view(np.uint8), a.n_images, a.shape)


def bitmap_andnot(a: Bitmap, b: Bitmap) -> Bitmap:
    """a AND NOT b, over a's images."""
    ids, rows, _ = _andnot_rows(a, b)
    return Bitmap(ids, rows.view(np.uint8), a.n_images, a.shape)


def bitmap_or(a: Bitmap, b: Bitmap) -> Bitmap:
    """a OR b, over the images either lists."""
    return _or(a, b)[0]


def _or(a: Bitmap, b: Bitmap) -> tuple[Bitmap, np.ndarray, np.ndarray]:
    """(a OR b, positions of a's images in it, of b's)."""
    wa = kernels.words(a.rows)
    ids, pa, pb = kernels.or_merge(a.ids, b.ids)
    out = np.empty((len(ids), wa.shape[1]), np.uint64)
    kernels.or_rows(wa, kernels.words(b.rows), pa, pb, out)
    return Bitmap(ids, out.view(np.uint8), a.n_images, a.shape), pa, pb


def intersect_counts(a: Bitmap, b: Bitmap) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, |a_n and b_n|) over the images both list (zeros included)."""
    ia, ib = kernels.matches(a.ids, b.ids)
    return a.ids[ia], kernels.and_popcounts(kernels.words(a.rows), kernels.words(b.rows), ia, ib)


# --- per-image geometry: boxes and all-ones rectangles, (r0, c0, r1, c1) half-open ---

def box_overlap(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Area of the intersection of rectangles p, q (..., 4); 0 when disjoint or empty."""
    h = np.minimum(p[..., 2], q[..., 2]).astype(np.int64) - np.maximum(p[..., 0], q[..., 0])
    w = np.minimum(p[..., 3], q[..., 3]).astype(np.int64) - np.maximum(p[..., 1], q[..., 1])
    return np.maximum(h, 0) * np.maximum(w, 0)


def box_area(p: np.ndarray) -> np.ndarray:
    return box_overlap(p, p)


def hull_area(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Area of the smallest rectangle holding p and q (both non-empty), without building it."""
    h = np.maximum(p[..., 2], q[..., 2]).astype(np.int32) - np.minimum(p[..., 0], q[..., 0])
    return h * (np.maximum(p[..., 3], q[..., 3]).astype(np.int32) - np.minimum(p[..., 1], q[..., 1]))


def box_hull(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.concatenate([np.minimum(p[..., :2], q[..., :2]), np.maximum(p[..., 2:], q[..., 2:])], -1)


def box_meet(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Intersection rectangle; empty ones become (0, 0, 0, 0)."""
    m = np.concatenate([np.maximum(p[..., :2], q[..., :2]), np.minimum(p[..., 2:], q[..., 2:])], -1)
    m[box_area(m) == 0] = 0
    return m


def rect_outside(r: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Largest of the 4 pieces of rectangle r above, below, left and right of box b."""
    r0, c0, r1, c1 = (r[:, i] for i in range(4))
    pieces = np.stack([
        np.stack([r0, c0, np.minimum(r1, b[:, 0]), c1], 1),
        np.stack([np.maximum(r0, b[:, 2]), c0, r1, c1], 1),
        np.stack([r0, c0, r1, np.minimum(c1, b[:, 1])], 1),
        np.stack([r0, np.maximum(c0, b[:, 3]), r1, c1], 1)], 1)
    best = box_area(pieces).argmax(1)
    return box_meet(pieces[np.arange(len(r)), best], r)


def mask_geometry(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box and largest all-ones *square* of each bool (k, H, W) mask, int16 (k, 4).

    The square is the classic DP s = min(up-run, left-run, diagonal + 1), vectorised over
    the batch: 3 x H (or W) numpy steps per batch instead of a per-image Python loop.
    """
    k, h, w = masks.shape
    rows_any, cols_any = masks.any(2), masks.any(1)
    box = np.stack([rows_any.argmax(1), cols_any.argmax(1),
                    h - rows_any[:, ::-1].argmax(1), w - cols_any[:, ::-1].argmax(1)], 1)
    box[~rows_any.any(1)] = 0
    m = masks.view(np.uint8) if max(h, w) < 255 else masks.astype(np.uint16)
    dt = m.dtype.type
    up = _runs(m)
    left = _runs(m.transpose(0, 2, 1).copy()).transpose(0, 2, 1)
    s = np.minimum(up, left)
    for i in range(1, h):
        np.minimum(s[:, i, 1:], s[:, i - 1, :-1] + dt(1), out=s[:, i, 1:])
    flat = s.reshape(k, -1)
    at = flat.argmax(1)
    size = flat[np.arange(k), at].astype(np.int64)
    i, j = np.divmod(at, w)
    rect = np.stack([i + 1 - size, j + 1 - size, i + 1, j + 1], 1)
    rect[size == 0] = 0
    return box.astype(np.int16), rect.astype(np.int16)


def _runs(m: np.ndarray) -> np.ndarray:
    """Length of the run of ones ending at each cell, going down axis 1."""
    out = m.copy()
    for i in range(1, m.shape[1]):
        np.add(out[:, i - 1], 1, out=out[:, i])
        out[:, i] *= m[:, i]  # m is 0/1: resets the run where the cell is unset
    return out


@dataclass(frozen=True)
class Region:
    """A Bitmap plus, per listed image, a bounding box and an all-ones rectangle of its cells.

    Both are (r0, c0, r1, c1) int16, half-open: rows r0 <= r < r1, columns c0 <= c < c1;
    (0, 0, 0, 0) is the empty rectangle. A box may be loose and a rectangle small: MMESH
    needs only box ⊇ mask and rect ⊆ mask, not tightness.
    """

    bitmap: Bitmap
    box: np.ndarray   # (k, 4) int16 aligned with bitmap.ids
    rect: np.ndarray  # (k, 4) int16

    @property
    def nbytes(self) -> int:
        return self.bitmap.rows.nbytes + self.box.nbytes + self.rect.nbytes + self.bitmap.ids.nbytes


def combine(left: Region, op: str, right: Region) -> Region:
    """`left op right` with geometry composed without looking at cells (valid, maybe loose)."""
    a, b = left.bitmap, right.bitmap
    if op == AND:
        ids, rows, ia, ib = _and_rows(a, b)
        box = box_meet(left.box[ia], right.box[ib])
        rect = box_meet(left.rect[ia], right.rect[ib])
    elif op == AND_NOT:
        ids, rows, keep = _andnot_rows(a, b)
        ia, ib = match_sorted(a.ids, b.ids)
        rect = left.rect.copy()
        rect[ia] = rect_outside(left.rect[ia], right.box[ib])
        box, rect = left.box[keep], rect[keep]
    elif op == OR:
        bm, pa, pb = _or(a, b)
        ia, ib = match_sorted(a.ids, b.ids)
        box = np.zeros((len(bm.ids), 4), np.int16)
        rect = np.zeros_like(box)
        box[pa], rect[pa] = left.box, left.rect
        box[pb], rect[pb] = right.box, right.rect
        both = pa[ia]
        box[both] = box_hull(left.box[ia], right.box[ib])
        bigger = box_area(right.rect[ib]) > box_area(left.rect[ia])
        rect[both] = np.where(bigger[:, None], right.rect[ib], left.rect[ia])
        return Region(bm, box, rect)
    else:
        raise ValueError(f"unknown operator {op!r}")
    return Region(Bitmap(ids, rows.view(np.uint8), a.n_images, a.shape), box, rect)


@dataclass(frozen=True)
class UnitCells:
    """A unit's bitmap A indexed for per-concept counts (`ConceptStore.unit_cells`)."""

    words: np.ndarray         # A's rows as uint64 words
    pos: np.ndarray           # (N,) A's row of image n, -1 if none
    spans: np.ndarray         # (k, 2) per row of A: its first set word and one past its last
    cells: np.ndarray         # (N,) |A_n|
    ic: np.ndarray            # (P,) |A_n and c_n| per pair


GEOMETRY_BYTES = 16 << 20  # unpacked cells per geometry batch: bounds memory at any scale


class ConceptStore:
    """Concept masks for search: CSR over (concept, image) pairs sorted by (concept, image).

    Per pair: image, packed row (-1 = image-level: all cells), area, box, rect (see `Region`).
    Per concept: total cells `sizes`. Image-major index: the pairs of image n are
    `img_pairs[img_ptr[n]:img_ptr[n + 1]]`. Memory beyond the index arrays shared with
    `PackedMasks`: box + rect + img_pairs = 20 bytes a pair; rows stay memory-mapped.
    """

    def __init__(self, n_images: int, shape, concept, image_id, row, area, bits, n_concepts: int,
                 geometry: tuple[np.ndarray, ...] | None = None):
        self.n_images, self.shape, self.n_concepts = int(n_images), tuple(shape), int(n_concepts)
        self.row_bytes = row_bytes_for(self.shape)
        self.pair_concept, self.pair_image, self.pair_row = concept, image_id, row
        self.area, self.bits = area, bits
        self.words = kernels.words(np.asarray(bits))  # the kernels' view of the rows (no copy)
        self.ptr = np.searchsorted(concept, np.arange(n_concepts + 1)).astype(np.int64)
        self.sizes = np.bincount(concept, weights=area, minlength=n_concepts).astype(np.int64)
        self.img_pairs = np.argsort(image_id, kind="stable").astype(np.int32)
        self.img_ptr = np.searchsorted(image_id[self.img_pairs], np.arange(n_images + 1)).astype(np.int64)
        self.full_row = pack_masks(np.ones((1,) + self.shape, bool), self.row_bytes)[0]
        self.box, self.rect = geometry[:2] if geometry is not None else self._geometry()
        self._meets = geometry[2] if geometry is not None and len(geometry) > 2 else None
        self._by_image = None

    @classmethod
    def from_packed(cls, pm, geometry=None) -> ConceptStore:
        """Zero-copy over a `nexplain.data.concepts.PackedMasks`; `geometry` = a saved `store.geometry()`."""
        return cls(pm.n_images, pm.shape, pm.concept, pm.image_id, pm.row, pm.n_pixels, pm.bits,
                   pm.n_concepts, geometry)

    @classmethod
    def from_dense(cls, masks: np.ndarray, image_level: np.ndarray | None = None) -> ConceptStore:
        """From bool (C, N, H, W) masks; `image_level` (C, N) bool marks image-level labels,
        which cover their whole image whatever `masks` holds there."""
        masks = np.asarray(masks, bool)
        n_c, n, h, w = masks.shape
        lvl = np.zeros((n_c, n), bool) if image_level is None else np.asarray(image_level, bool)
        concept, image = np.nonzero(masks.any((2, 3)) | lvl)  # C-order: sorted by (concept, image)
        pixel = ~lvl[concept, image]
        row = np.full(len(concept), -1, np.int64)
        row[pixel] = np.arange(pixel.sum())
        area = np.where(pixel, masks[concept, image].sum((1, 2)), h * w).astype(np.int32)
        bits = pack_masks(masks[concept[pixel], image[pixel]], row_bytes_for((h, w)))
        return cls(n, (h, w), concept.astype(np.int32), image.astype(np.int32), row, area, bits, n_c)

    def geometry(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(box, rect, meets), to save and pass back to the constructor (it is the slow part)."""
        return self.box, self.rect, self.meets

    @property
    def by_image(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(concept, area, box, rect) per pair in image-major order (that of `img_pairs`),
        made on first use (24 bytes a pair): MMESH's bound terms walk every pair of an
        image, and in this order the walk streams instead of jumping across the arrays."""
        if self._by_image is None:
            p = self.img_pairs
            self._by_image = (self.pair_concept[p], self.area[p], self.box[p], self.rect[p])
        return self._by_image

    @property
    def meets(self) -> np.ndarray:
        """(C, C) bool: concepts c and d share a cell somewhere in the dataset."""
        if self._meets is None:
            self._meets = self._concept_meets()
        return self._meets

    def _concept_meets(self) -> np.ndarray:
        """Every pair of concepts present in one image, by image size class; a pair already
        known to meet, or with disjoint boxes, reads no rows."""
        meets = np.zeros((self.n_concepts, self.n_concepts), bool)
        k = np.diff(self.img_ptr)
        step = max(1, GATHER_BYTES // self.row_bytes)
        for size in np.unique(k[k > 1]):
            starts = self.img_ptr[:-1][k == size]
            block = self.img_pairs[starts[:, None] + np.arange(size)]
            i, j = np.triu_indices(size, 1)
            p, q = block[:, i].ravel(), block[:, j].ravel()
            for s in range(0, len(p), step):
                a, b = p[s:s + step], q[s:s + step]
                ca, cb = self.pair_concept[a], self.pair_concept[b]
                todo = ~meets[ca, cb] & (box_overlap(self.box[a], self.box[b]) > 0)
                a, b, ca, cb = a[todo], b[todo], ca[todo], cb[todo]
                ra, rb = self.pair_row[a], self.pair_row[b]
                hit = (ra < 0) | (rb < 0)  # an image-level label meets whatever shares its image
                px = ~hit
                both = self.bits[ra[px]] & self.bits[rb[px]]
                hit[px] = both.view(np.uint64).any(axis=1)
                meets[ca[hit], cb[hit]] = meets[cb[hit], ca[hit]] = True
        meets[np.diag_indices(self.n_concepts)] = self.sizes > 0
        return meets

    def _geometry(self) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.shape
        box = np.zeros((len(self.pair_row), 4), np.int16)
        box[:] = (0, 0, h, w)  # image-level pairs: the whole image
        rect = box.copy()
        pix = np.flatnonzero(self.pair_row >= 0)
        pix = pix[np.argsort(self.pair_row[pix], kind="stable")]  # read bits.u8 sequentially
        step = max(1, GEOMETRY_BYTES // (h * w))
        for s in range(0, len(pix), step):
            p = pix[s:s + step]
            rows = np.asarray(self.bits[self.pair_row[p]])
            cells = np.unpackbits(rows, axis=1, count=h * w, bitorder=BITORDER).reshape(-1, h, w)
            box[p], rect[p] = mask_geometry(cells.view(bool))
        return box, rect

    # --- per concept ---

    def images(self, c: int) -> np.ndarray:
        """Sorted ids of the images where concept c is present."""
        return self.pair_image[self.ptr[c]:self.ptr[c + 1]]

    def areas(self, c: int) -> np.ndarray:
        """Cells of concept c per image, aligned with `images(c)`."""
        return self.area[self.ptr[c]:self.ptr[c + 1]]

    def bitmap(self, c: int) -> Bitmap:
        """Concept c as a Bitmap; a zero-copy slice of the rows when it has no image-level pairs."""
        lo, hi = self.ptr[c], self.ptr[c + 1]
        rows = self.pair_row[lo:hi]
        ids = self.pair_image[lo:hi].astype(np.int64)
        if len(rows) and rows.min() >= 0 and rows[-1] - rows[0] == len(rows) - 1:
            packed = self.bits[rows[0]:rows[0] + len(rows)]
        else:
            packed = np.empty((len(rows), self.row_bytes), np.uint8)
            packed[rows < 0] = self.full_row
            packed[rows >= 0] = self.bits[rows[rows >= 0]]
        return Bitmap(ids, packed, self.n_images, self.shape)

    def region(self, c: int) -> Region:
        lo, hi = self.ptr[c], self.ptr[c + 1]
        return Region(self.bitmap(c), self.box[lo:hi], self.rect[lo:hi])

    def overlaps(self, unit: UnitCells, region: Region) -> np.ndarray:
        """|A_n and L_n| per image, (N,) int64, for a unit A and a formula L (its region)."""
        out = np.zeros(self.n_images, np.int64)
        bm = region.bitmap
        kernels.overlaps(unit.words, unit.pos, kernels.words(bm.rows), bm.ids, region.box, self.shape[1], out)
        return out

    def unit_counts(self, c: int, region: Region, unit: UnitCells, il: np.ndarray,
                    count_x: bool = True) -> tuple[int, int]:
        """(|c and L|, |c and L and A|) for a formula L (its region) and a unit A, with
        il = `overlaps(unit, region)`; reads c's rows once, within both boxes, and A's rows
        only where the per-image counts leave Y open (`kernels.unit_counts`). `count_x`
        False: (0, Y), visiting only the images where A meets L."""
        lo, hi = self.ptr[c], self.ptr[c + 1]
        bm = region.bitmap
        return kernels.unit_counts(self.words, self.pair_row[lo:hi], self.pair_image[lo:hi], self.box[lo:hi],
                                   unit.ic[lo:hi], kernels.words(bm.rows), bm.ids, region.box, unit.words, unit.pos,
                                   unit.spans, unit.cells, il, count_x, self.shape[1])

    def unit_cells(self, A: Bitmap, pair_counts: tuple[np.ndarray, np.ndarray] | None = None) -> UnitCells:
        """A indexed for `unit_counts`; `pair_counts` = `pair_counts(A)` if at hand."""
        pairs, counts = self.pair_counts(A) if pair_counts is None else pair_counts
        pos = self.positions(A.ids)
        cells = np.zeros(self.n_images, np.int64)
        cells[A.ids] = A.per_image()
        ic = np.zeros(len(self.pair_concept), np.int32)
        ic[pairs] = counts
        words = kernels.words(A.rows)
        return UnitCells(words, pos, kernels.word_spans(words), cells, ic)

    # --- all concepts at once ---

    def pair_counts(self, b: Bitmap) -> tuple[np.ndarray, np.ndarray]:
        """(pairs, |b_n and c_n|) for every pair whose image b lists: one pass over supp(b)."""
        return self.pair_counts_many([b])[0]

    def pair_counts_many(self, bitmaps: list[Bitmap]) -> list[tuple[np.ndarray, np.ndarray]]:
        """`pair_counts` of several bitmaps from one read of the rows they share images with
        (the K cluster ranges of a unit: each row of bits.u8 is read once, not K times)."""
        if not bitmaps:
            return []
        ids = np.unique(np.concatenate([b.ids for b in bitmaps]))
        where = np.stack([self.positions(b.ids) for b in bitmaps])
        rows = tuple(kernels.words(b.rows) for b in bitmaps)
        counts = np.full((len(bitmaps), len(self.pair_image)), -1, np.int32)  # a count is at most H x W
        kernels.pair_counts(self.words, self.pair_row, self.box, self.img_pairs, self.img_ptr, ids, rows, where,
                            self.shape[1], counts)
        out = []
        for n in counts:
            pairs = np.flatnonzero(n >= 0)  # sorted pair ids
            out.append((pairs, n[pairs].astype(np.int64)))
        return out

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """(N,) lookup: position of image n in sorted `ids`, -1 if absent (a gather beats a search)."""
        out = np.full(self.n_images, -1, np.int64)
        out[ids] = np.arange(len(ids))
        return out

    def counts(self, b: Bitmap) -> np.ndarray:
        """|b and c| for every concept c, (C,) int64."""
        pairs, n = self.pair_counts(b)
        return np.bincount(self.pair_concept[pairs], weights=n, minlength=self.n_concepts).astype(np.int64)
