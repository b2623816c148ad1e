"""Explaining one unit (or cluster) bitmap A: NetDissect, CoEx beam search, MMESH search.

All searches count exactly (docs/methods.md). One pass over supp(A) gives
Z_c = |A and c| for every concept. For a beam formula L and every concept c,
X_c = |L and c| (unit-independent, cached by L's canonical key) and
Y_c = |A and L and c| give every candidate `L op c` by inclusion-exclusion:

    op        |F|              |A and F|
    OR        |L| + |c| - X    |A and L| + Z - Y
    AND       X                Y
    AND NOT   |L| - X          |A and L| - Y

`beam_search` computes X and Y for all c (a pass over supp(L) and one over
supp(A and L)). `mmesh_search` first bounds every candidate's IoU from per-image
areas, boxes and all-ones rectangles (docs/methods.md, unrounded, plus the extra
valid bounds noted in `_estimates` and `_coarse`), then counts exactly only the
(L, c) pairs it visits in bound order (one pass over c's, L's and A's rows, A's only
where per-image counts leave Y open: `ConceptStore.unit_counts`), stopping when the beam
is full and the next bound is strictly below the beam's worst score. Since the bound is >= the score in
floating point too (both are one correctly rounded division of exact integers, then
the same penalty factor), both return the same beam. A pair needs no count when X = 0
is proven: disjoint boxes in every image, or c never sharing a cell with L's positive
concepts anywhere in the dataset (`ConceptStore.meets`). A pair whose X an earlier search
left in the cache (a sibling cluster, an earlier unit) gets a second bound before its count:
|F| is then exact and only Y is open (`_x_bound`).

The last round keeps `final_beam` formulas: 1 by default, the reported best (the
reference's choice too); the earlier rounds keep the beam, so the best is unchanged.

Ranking: score desc, then fewer distinct concepts (so `L AND NOT c`, with c never
meeting L, cannot push out equal-scoring shorter formulas), then canonical key.
Equivalent candidates count once, kept as the best score then the smallest `written`
form. Candidates equivalent to a formula of the previous beam, constant ones and ones
with IoU 0 are dropped. Caches: `SearchCache` (per store, across units) holds X and
formula masks; the rest lives for one search.
"""

from __future__ import annotations

import weakref
from bisect import insort
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from nexplain.compositional import kernels
from nexplain.compositional.formulas import AND, OPS, OR, Formula, leaf
from nexplain.compositional.masks import Bitmap, ConceptStore, Region, bitmap_and, combine


class Scored(NamedTuple):
    formula: Formula
    iou: float
    score: float  # iou * penalty ** (len - 1)


@dataclass(frozen=True)
class SearchResult:
    formula: Formula | None  # best formula; None when A is empty or no concept touches it
    iou: float
    score: float
    beam: tuple[Scored, ...]  # best first
    visited: int              # exact IoU evaluations, singles included
    visited_compound: int     # of those, formulas of length >= 2
    dead: bool = False        # A has no cells
    proof: object = None      # the exact search's `exact.Proof`


class _LRU:
    """Least-recently-used map bounded by the bytes its values declare."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.nbytes, self.items = max_bytes, 0, OrderedDict()

    def get(self, key):
        hit = self.items.get(key)
        if hit is None:
            return None
        self.items.move_to_end(key)
        return hit[0]

    def put(self, key, value, nbytes: int) -> None:
        if key in self.items:
            self.nbytes -= self.items.pop(key)[1]
        if nbytes > self.max_bytes:
            return
        self.items[key] = (value, nbytes)
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes:
            self.nbytes -= self.items.popitem(last=False)[1][1]


class SearchCache:
    """Unit-independent work reused across units: X = |L and c| per canonical key of L
    (possibly partial: a `known` mask), and formula regions per written form."""

    # regions: room for the OR formulas of frequent concepts that recur across clusters and
    # units (80 MB each at Broden size); at 256 MB they were rebuilt twice as often
    def __init__(self, count_bytes: int = 64 << 20, region_bytes: int = 512 << 20):
        self.counts, self.regions = _LRU(count_bytes), _LRU(region_bytes)
        self._store = None

    def bind(self, store: ConceptStore) -> SearchCache:
        """Tie the cache to one store: its entries mean nothing for another."""
        if self._store is None:
            self._store = weakref.ref(store)
        elif self._store() is not store:
            raise ValueError("this SearchCache belongs to another ConceptStore")
        return self


_DEFAULT_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_cache(store: ConceptStore) -> SearchCache:
    """The cache used when a search gets none: one per store, living as long as the store."""
    if store not in _DEFAULT_CACHES:
        _DEFAULT_CACHES[store] = SearchCache()
    return _DEFAULT_CACHES[store]


def _iou(inter, size, total):
    """|A and F| / (|A| + |F| - |A and F|): one float64 division of exact integers."""
    return np.float64(inter) / np.float64(total + size - inter)


class _Ctx:
    """One search: the unit's counts, the store, the cache and the penalty."""

    def __init__(self, A: Bitmap, store: ConceptStore, cache: SearchCache, penalty, pair_counts=None):
        self.A, self.store, self.cache, self.penalty = A, store, cache, penalty
        self.total = A.count()
        # sorted pair ids, |A_n and c_n|
        self.pairs, self.pair_counts = store.pair_counts(A) if pair_counts is None else pair_counts
        self.Z = np.bincount(store.pair_concept[self.pairs], weights=self.pair_counts,
                             minlength=store.n_concepts).astype(np.int64)
        self.unit = store.unit_cells(A, (self.pairs, self.pair_counts))
        self.a_img = self.unit.cells
        self.nonempty = store.sizes > 0
        self.known: dict = {}  # canonical key -> exact IoU (equivalent formulas share it)
        self.memo: dict = {}   # written form -> `expansion`, for this search only
        self.xy: dict = {}     # (written form, c) -> (X, Y) counted by MMESH
        self.ils: dict = {}    # written form -> |A_n and L_n| per image (N,)
        self._ic_by_image = None

    def factor(self, length: int) -> float:
        return 1.0 if self.penalty is None else float(self.penalty) ** (length - 1)

    def formed(self, f: Formula) -> tuple[Region, np.ndarray]:
        """(region, per-image areas) of f; compound ones cached by written form."""
        if len(f) == 1:
            c = f.leaves[0]
            return self.store.region(c), self.store.areas(c)
        hit = self.cache.regions.get(f.written)
        if hit is None:
            region = combine(self.formed(f.left)[0], f.ops[-1], self.store.region(f.leaves[-1]))
            hit = (region, region.bitmap.per_image())
            self.cache.regions.put(f.written, hit, region.nbytes + hit[1].nbytes)
        return hit

    def x_counts(self, f: Formula, bm: Bitmap | None = None) -> np.ndarray:
        """X = |L and c| for every concept c, (C,); `bm` = L's mask if at hand."""
        hit = self.cache.counts.get(f.key)
        if hit is None or not hit[1].all():
            bm = self.formed(f)[0].bitmap if bm is None else bm
            hit = (self.store.counts(bm), np.ones(self.store.n_concepts, bool))
            self.cache.counts.put(f.key, hit, hit[0].nbytes + hit[1].nbytes)
        return hit[0]

    def xy_counts(self, f: Formula, c: int, region: Region) -> tuple[int, int]:
        """(X, Y) = (|L and c|, |A and L and c|) for one concept; `region` = L's.
        X is unit-independent and cached; a miss counts both from one read of c's rows.
        Y <= min(X, Z_c, |A and L|): where one of them is 0, Y = 0 needs no read."""
        hit = self.cache.counts.get(f.key)
        if hit is None:
            hit = (np.zeros(self.store.n_concepts, np.int64), np.zeros(self.store.n_concepts, bool))
            self.cache.counts.put(f.key, hit, hit[0].nbytes + hit[1].nbytes)
        il = self.il_per_image(f, region)
        if hit[1][c]:  # Y alone: c's rows where A meets L
            x = int(hit[0][c])
            y_open = x > 0 and self.Z[c] > 0
            return x, self.store.unit_counts(c, region, self.unit, il, count_x=False)[1] if y_open else 0
        x, y = self.store.unit_counts(c, region, self.unit, il)
        hit[0][c], hit[1][c] = x, True
        return x, y

    def cached_x(self, f: Formula, c: int) -> int | None:
        """X = |L and c| if an earlier count left it in the cache, else None."""
        hit = self.cache.counts.get(f.key)
        return int(hit[0][c]) if hit is not None and hit[1][c] else None

    def ic_of(self, pairs: np.ndarray | None = None) -> np.ndarray:
        """|A_n and c_n| for pair ids (0 for pairs outside supp(A)); a dense (P,) table."""
        return self.unit.ic if pairs is None else self.unit.ic[pairs]

    def ic_by_image(self) -> np.ndarray:
        """`ic_of()` in the store's image-major pair order (`ConceptStore.by_image`), made once."""
        if self._ic_by_image is None:
            self._ic_by_image = self.ic_of()[self.store.img_pairs]
        return self._ic_by_image

    def expansion(self, f: Formula, mmesh: bool, floor: float = 0.0):
        """(|L|, |A and L|, data) of beam formula L: data = Y = |A and L and c| (C,), or for
        MMESH (bounds (3, C), X = 0 proven (C,), (lower, upper) bounds on Y (C,) each).

        MMESH bounds below `floor` (a score no candidate below can reach the beam with) may
        stay coarse. Memoised for the search (a formula that survives a round is expanded
        again in the next, with a floor as high or higher). MMESH never builds the bitmap
        A and L (its counts read A's rows beside L's); the exact round's is transient, as it
        can be large."""
        hit = self.memo.get(f.written)
        if hit is None:
            region, areas = self.formed(f)
            n_l = int(areas.sum())
            if mmesh:
                il_img = self.il_per_image(f, region)
                i_l = int(il_img.sum())
                factor = self.factor(len(f) + 1)
                bounds, disjoint, y_range = _estimates(self, region, areas, il_img, n_l, i_l, floor / factor)
                data = (bounds * factor, disjoint | ~_may_meet(self.store, f), y_range)
            else:
                al = bitmap_and(self.A, region.bitmap)
                i_l, data = al.count(), self.store.counts(al)
            hit = self.memo[f.written] = (n_l, i_l, data)
        return hit

    def il_per_image(self, f: Formula, region: Region) -> np.ndarray:
        """|A_n and L_n| per image, (N,), made once per search; a single concept's comes from
        the pair counts."""
        hit = self.ils.get(f.written)
        if hit is None:
            if len(f) == 1:
                c = f.leaves[0]
                lo, hi = self.store.ptr[c], self.store.ptr[c + 1]
                hit = np.zeros(self.store.n_images, np.int64)
                hit[self.store.pair_image[lo:hi]] = self.ic_of(np.arange(lo, hi))
            else:
                hit = self.store.overlaps(self.unit, region)
            self.ils[f.written] = hit
        return hit


def _may_meet(store: ConceptStore, f: Formula) -> np.ndarray:
    """(C,) bool from the dataset's concept co-occurrence: False proves |f and c| = 0."""
    m = store.meets[f.leaves[0]]
    for op, c in zip(f.ops, f.leaves[1:]):
        m = m | store.meets[c] if op == OR else m & store.meets[c] if op == AND else m
    return m


def rank(e: Scored):
    """Beam order (and the exact search's ranking): score desc, then fewer concepts, then canonical key."""
    return -e.score, len(e.formula.key[0]), e.formula.key


class _Selection:
    """Top-`size` distinct formulas of the previous beam plus the candidates added so far.

    Order-independent (so MMESH can add in bound order): per key the best representative
    counts; a key evicted earlier can only come back with a better score.
    """

    def __init__(self, size: int, old):
        self.size = size
        self.entries = sorted(old, key=rank)[:size]
        self.locked = {e.formula.key for e in old}
        self.best = {e.formula.key: e for e in self.entries}

    @property
    def full(self) -> bool:
        return len(self.entries) >= self.size

    @property
    def worst(self) -> float:
        return self.entries[-1].score

    def blocked(self, f: Formula) -> bool:
        return f.is_constant or f.key in self.locked

    def add(self, f: Formula, iou: float, score: float) -> None:
        if not score > 0 or self.blocked(f):
            return
        new, cur = Scored(f, float(iou), float(score)), self.best.get(f.key)
        if cur is not None:
            if (-new.score, f.written) < (-cur.score, cur.formula.written):
                self.entries.remove(cur)
                insort(self.entries, new, key=rank)
                self.best[f.key] = new
            return
        if self.full and rank(new) > rank(self.entries[-1]):
            return
        insort(self.entries, new, key=rank)
        self.best[f.key] = new
        if len(self.entries) > self.size:
            del self.best[self.entries.pop().formula.key]


def _exact_round(ctx: _Ctx, sel: _Selection, beam_entries) -> int:
    """Expand every beam formula exactly for all concepts and operators; returns evaluations."""
    st, parts = ctx.store, []
    for li, e in enumerate(beam_entries):
        n_l, i_l, y = ctx.expansion(e.formula, mmesh=False)
        x = ctx.x_counts(e.formula)
        size = np.stack([n_l + st.sizes - x, x, n_l - x])        # rows in OPS order
        inter = np.stack([i_l + ctx.Z - y, y, i_l - y])
        iou = _iou(inter, size, ctx.total)
        score = iou * ctx.factor(len(e.formula) + 1)
        op, c = np.nonzero((score > 0) & ctx.nonempty)
        parts.append((np.full(len(c), li), op, c, iou[op, c], score[op, c]))
    if parts:
        li, op, c, iou, score = (np.concatenate(p) for p in zip(*parts))
        for k in np.argsort(-score, kind="stable"):  # only the head needs keys
            if sel.full and score[k] < sel.worst:
                break
            sel.add(beam_entries[li[k]].formula.extend(OPS[op[k]], c[k]), iou[k], score[k])
    return len(beam_entries) * len(OPS) * int(ctx.nonempty.sum())


def _coarse(ctx: _Ctx, n_l: int, i_l: int) -> np.ndarray:
    """Upper bounds on the IoU of `L op c` from totals alone, (3, C): |A and F| at most
    i_l + Z (OR), min(i_l, Z) (AND), i_l (AND NOT); |F outside A| at least the larger of
    L's and c's (OR), 0 (AND), L's minus c's (AND NOT)."""
    fp_l, fp_c = n_l - i_l, ctx.store.sizes - ctx.Z
    inter = np.stack([i_l + ctx.Z, np.minimum(i_l, ctx.Z), np.full_like(ctx.Z, i_l)]).astype(np.float64)
    fp = np.stack([np.maximum(fp_l, fp_c), np.zeros_like(fp_c), np.maximum(fp_l - fp_c, 0)])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(inter > 0, inter / (ctx.total + fp), 0.0)


def _estimates(ctx: _Ctx, region: Region, areas: np.ndarray, il_img: np.ndarray, n_l: int, i_l: int,
               floor: float = 0.0):
    """Upper bounds on the IoU of `L op c`, (3, C) in OPS order (docs/methods.md).

    Per image n: Imax >= |A_n and F_n| and amin, with amin - Imax <= |F_n| - |A_n and F_n|,
    so sum Imax / (|A| + sum amin - sum Imax) >= IoU. Only images of supp(L) holding c
    need per-pair terms; elsewhere the bound is exact and enters via the totals.
    Extra bounds beyond docs/methods.md: AND: |L and c| >= aL + ac - area(hull of boxes);
    AND NOT: |L - c| >= aL - ac and >= |rect_L outside box_c|. And false positives: with
    fL, fc the cells of L and c outside A_n, |F_n outside A_n| is at least fL + fc - s (OR),
    fL - s (AND NOT) with s = min(fL, fc, box overlap), and fL + fc - |outside A_n| (AND);
    amin = Imax + that bound keeps amin - Imax <= |F_n| - |A_n and F_n|.
    Concepts whose `_coarse` bounds are all below `floor` keep those (no per-pair terms);
    the others get the smaller of the two bounds.
    Returns (bounds, X = 0 proven, (lower, upper) bounds on Y = |A and L and c|): per image,
    Y_n >= |A_n and L_n| + |A_n and c_n| - |A_n| and Y_n <= min(|A_n and L_n|, |A_n and c_n|).
    """
    st, bm = ctx.store, region.bitmap
    coarse = _coarse(ctx, n_l, i_l)
    refine = coarse.max(axis=0) >= floor
    concept, area, box, rect = st.by_image
    terms = kernels.estimate_terms(bm.ids, st.img_ptr, concept, refine, ctx.a_img, il_img, ctx.ic_by_image(),
                                   areas, region.box, region.rect, area, box, rect, st.shape[0] * st.shape[1])
    inter = np.stack([i_l + ctx.Z + terms[0], terms[2], i_l + terms[4]])
    size = np.stack([n_l + st.sizes + terms[1], terms[3], n_l + terms[5]])
    with np.errstate(invalid="ignore", divide="ignore"):
        fine = np.where(inter > 0, inter / (ctx.total + size - inter), 0.0)
    bounds = np.where(refine, np.minimum(fine, coarse), coarse)
    y_range = (np.where(refine, -terms[4], 0), np.where(refine, terms[2], np.minimum(i_l, ctx.Z)))
    return bounds, refine & (terms[6] == 0), y_range  # boxes never overlap: |L and c| = 0, no count needed


def _x_bound(ctx: _Ctx, op: int, x: int, n_l: int, i_l: int, c: int, y_range) -> float:
    """Upper bound on the IoU of `L op c` (op an index into OPS) when X = |L and c| is known:
    |F| is then exact and only Y = |A and L and c| is open, between `y_range`'s per-image
    bounds and these from totals: Y >= X minus L's (or c's) cells outside A, Y >= |A and L|
    + Z_c - |A|, Y <= min(X, Z_c, |A and L|). The IoU is monotone in Y (rising for AND,
    falling for OR and AND NOT), so its value at the matching end bounds it; in floating point
    too, as both are one correctly rounded division of exact integers."""
    z, size_c = int(ctx.Z[c]), int(ctx.store.sizes[c])
    if OPS[op] == AND:
        y = min(int(y_range[1][c]), x, z, i_l)
    else:
        y = max(int(y_range[0][c]), x - (n_l - i_l), x - (size_c - z), i_l + z - ctx.total, 0)
    size = (n_l + size_c - x, x, n_l - x)[op]
    inter = (i_l + z - y, y, i_l - y)[op]
    return float(_iou(inter, size, ctx.total))


def _loses(sel: _Selection, f: Formula, bound: float) -> bool:
    """A candidate whose score is at most `bound` cannot enter the full selection: below its
    worst, or equal and losing the tie-break to a shorter or lower-keyed formula."""
    return sel.full and (-bound, len(f.key[0]), f.key) > rank(sel.entries[-1])


def _mmesh_round(ctx: _Ctx, sel: _Selection, beam_entries) -> int:
    """Expand the beam in bound order, counting exactly only what can still enter."""
    st, parts = ctx.store, []
    # the beam's masks stay pinned for the round: evaluations interleave across them, and an
    # LRU smaller than the beam would rebuild them over and over
    regions = [ctx.formed(e.formula)[0] for e in beam_entries]
    floor = sel.worst if sel.full else 0.0  # only rises during the round, and round to round
    for li, e in enumerate(beam_entries):
        bound = ctx.expansion(e.formula, mmesh=True, floor=floor)[2][0]
        op, c = np.nonzero((bound > 0) & ctx.nonempty)
        parts.append((np.full(len(c), li), op, c, bound[op, c]))
    if not parts:
        return 0
    li, op, c, bound = (np.concatenate(p) for p in zip(*parts))
    visited = 0
    for k in np.argsort(-bound, kind="stable"):
        if sel.full and bound[k] < sel.worst:
            break
        left, cc = beam_entries[li[k]].formula, int(c[k])
        f = left.extend(OPS[op[k]], cc)
        if sel.blocked(f) or _loses(sel, f, bound[k]):
            continue
        iou = ctx.known.get(f.key)
        if iou is None:  # an equivalent formula seen before has the same IoU: no need to count
            n_l, i_l, (_, disjoint, y_range) = ctx.expansion(left, mmesh=True)
            counted = not disjoint[cc]  # X = Y = 0 proven (boxes, co-occurrence): nothing to read
            if counted and (left.written, cc) not in ctx.xy:  # X and Y serve all three operators
                x = ctx.cached_x(left, cc)  # X from an earlier search: |F| exact, a tighter bound
                if x is not None and _loses(sel, f, _x_bound(ctx, op[k], x, n_l, i_l, cc, y_range)
                                            * ctx.factor(len(f))):
                    continue
                ctx.xy[left.written, cc] = ctx.xy_counts(left, cc, regions[li[k]])
            x, y = ctx.xy[left.written, cc] if counted else (0, 0)
            size = (n_l + int(st.sizes[cc]) - x, x, n_l - x)[op[k]]
            inter = (i_l + int(ctx.Z[cc]) - y, y, i_l - y)[op[k]]
            iou = ctx.known[f.key] = float(_iou(inter, size, ctx.total))
            visited += counted
        sel.add(f, iou, iou * ctx.factor(len(f)))
    return visited


def _search(A, store, length, beam, start_beam, penalty, cache, round_fn, final_beam=1,
            pair_counts=None) -> SearchResult:
    if A.shape != store.shape or A.n_images != store.n_images:
        raise ValueError(f"bitmap {A.n_images}x{A.shape} does not match the store "
                         f"{store.n_images}x{store.shape}")
    if min(length, beam, final_beam, start_beam or 1) < 1:
        raise ValueError("length, beam, start_beam and final_beam must be >= 1")
    if penalty is not None and not penalty > 0:
        raise ValueError(f"penalty must be > 0, got {penalty}")  # bounds need a positive factor
    if len(A.ids) == 0:  # Bitmaps hold no empty rows: no ids means no cells
        return SearchResult(None, 0.0, 0.0, (), 0, 0, dead=True)
    ctx = _Ctx(A, store, (cache or default_cache(store)).bind(store), penalty, pair_counts)
    iou = np.where(ctx.nonempty, _iou(ctx.Z, store.sizes, ctx.total), 0.0)
    order = np.lexsort((np.arange(len(iou)), -iou))  # IoU desc, then id (= canonical key)
    start = [Scored(leaf(c), float(iou[c]), float(iou[c]))
             for c in order[:start_beam or beam] if iou[c] > 0]
    ctx.known.update((e.formula.key, e.iou) for e in start)
    entries, compound = start[:min(beam, final_beam) if length == 1 else beam], 0
    for r in range(length - 1):
        sel = _Selection(beam if r < length - 2 else final_beam, start)
        compound += round_fn(ctx, sel, start)
        entries = start = sel.entries
    visited = int(ctx.nonempty.sum()) + compound  # every non-empty single is counted once
    if not entries:
        return SearchResult(None, 0.0, 0.0, (), visited, compound)
    return SearchResult(entries[0].formula, entries[0].iou, entries[0].score, tuple(entries),
                        visited, compound)


def netdissect(A: Bitmap, store: ConceptStore, cache: SearchCache | None = None,
               pair_counts=None) -> SearchResult:
    """Best single concept by IoU (ties: lowest id). Every search takes `pair_counts`, A's
    `store.pair_counts` if already at hand (`store.pair_counts_many` shares one read)."""
    return _search(A, store, 1, 1, None, None, cache, None, pair_counts=pair_counts)


def beam_search(A: Bitmap, store: ConceptStore, length: int = 3, beam: int = 5,
                start_beam: int | None = None, penalty: float | None = None,
                cache: SearchCache | None = None, final_beam: int = 1, pair_counts=None) -> SearchResult:
    """CoEx beam search (docs/methods.md), every candidate counted exactly.

    The last round keeps `final_beam` formulas: 1, the reported best, by default (as the
    reference does); `final_beam=beam` keeps the whole beam. Earlier rounds are unchanged,
    so the best is the same either way."""
    return _search(A, store, length, beam, start_beam, penalty, cache, _exact_round, final_beam, pair_counts)


def mmesh_search(A: Bitmap, store: ConceptStore, length: int = 3, beam: int = 5,
                 start_beam: int | None = None, penalty: float | None = None,
                 cache: SearchCache | None = None, final_beam: int = 1, pair_counts=None) -> SearchResult:
    """Same result as `beam_search`, visiting candidates in MMESH bound order."""
    return _search(A, store, length, beam, start_beam, penalty, cache, _mmesh_round, final_beam, pair_counts)
