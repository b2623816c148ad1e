"""Exact formula search: the best left-deep formula of length <= L, with a proof.

Same formulas and ranking as the beam (`search.py`): left-deep, operators OR, AND,
AND NOT, score = IoU x penalty ** (length - 1), ties to fewer concepts then the
canonical key then the smaller written form. Formulas repeating a concept are skipped:
each is equivalent to a shorter one, which is searched.

Counting goes through atoms (`atoms.py`): with m_F the atoms where F holds, |F| =
m_F . cells and |A and F| = m_F . a, a = A's cells per atom. So
- singles and every length-2 formula come exactly from two (C, C) matrices,
  K = |c and d| over the dataset (cached) and KA = |A and c and d|;
- the children `P op c` of a prefix P, for every c and op at once, from two
  vector-matrix products over atoms (X = |P and c|, Y = |A and P and c|), the
  inclusion-exclusion of `search.py`.

Branch and bound over prefixes, best bound first, from the best formula of length <= 2
(or a given incumbent, e.g. the beam's): a prefix is expanded only while the upper bound
of every score in its subtree can reach the incumbent. The bound of a length-2 prefix
P = a op b on its children `P op c` bounds Y and W = |P and c outside A| from pair
counts (`_child_bounds`); deeper subtrees use `_generic_bounds`. Every bound is an
integer ratio evaluated like the IoU itself (one float64 division), so bound >= score
holds in floating point too. `Proof` records how many subtrees were pruned and the
largest bound among them: strictly below the optimum's score, which proves it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from nexplain.compositional.atoms import Atoms, atoms_of
from nexplain.compositional.formulas import AND, AND_NOT, OPS, OR, Formula, leaf
from nexplain.compositional.masks import Bitmap, ConceptStore
from nexplain.compositional.search import Scored, SearchResult, rank

BATCH = (4, 8, 16, 32, 64)  # prefixes per matrix product: small first, as the first few often prove it
REFINE = 256        # prefixes given the O(C) bound at once
CHUNK = 1 << 21      # (a, b, c) bound entries computed at once: ~16 MB per float64 temporary


class Proof(NamedTuple):
    prefixes: int       # subtrees the search could expand (length 2 .. L-1 prefixes it bounded)
    expanded: int       # of those, expanded: their children counted exactly
    pruned: int         # the others, each with a bound below the optimum's score
    max_pruned: float   # the largest bound among the pruned (0 if none): < the optimum's score


class _Search:
    """One unit's search: its atom counts, the pair matrices and the incumbent."""

    def __init__(self, A: Bitmap, store: ConceptStore, atoms: Atoms, length: int, penalty, counts=None):
        self.store, self.atoms, self.length, self.penalty = store, atoms, length, penalty
        self.a = atoms.count(A) if counts is None else counts
        self.total = float(A.count())
        self.sizes = atoms.member.T @ atoms.cells  # = store.sizes, from atoms
        self.nz = np.flatnonzero(self.a)           # A's atoms: few, wherever A is small
        self.Sa = Sa = atoms.member[self.nz].toarray()
        self.Z = self.a[self.nz] @ Sa            # |A and c|
        self.K = atoms.pairs                     # |c and d|, unit-independent
        self.KA = (Sa * self.a[self.nz, None]).T @ Sa
        self.best: Scored | None = None
        self.visited = 0
        self.prefixes = self.expanded = self.pruned = 0
        self.max_pruned = 0.0

    def factor(self, n: int) -> float:
        return 1.0 if self.penalty is None else float(self.penalty) ** (n - 1)

    def floor(self) -> float:
        return self.best.score if self.best is not None else 0.0

    def iou(self, inter, size):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(inter > 0, inter / (self.total + size - inter), 0.0)

    def offer(self, scores: np.ndarray, ious: np.ndarray, formula_at) -> None:
        """Candidates (any shape): only the array's top score can beat or tie the incumbent;
        `formula_at(index tuple)` builds those."""
        top = scores.max() if scores.size else 0.0
        if not top > 0 or top < self.floor():
            return
        for i in map(tuple, np.argwhere(scores == top)):
            new = Scored(formula_at(i), float(ious[i]), float(scores[i]))
            if self.best is None or (rank(new), new.formula.written) < (rank(self.best), self.best.formula.written):
                self.best = new


def _level2(s: _Search):
    """Size and overlap of every length-2 formula, (3, C, C) in OPS order, and which are searched."""
    sz, Z, K, KA = s.sizes, s.Z, s.K, s.KA
    n = np.stack([sz[:, None] + sz[None, :] - K, K, sz[:, None] - K])
    i = np.stack([Z[:, None] + Z[None, :] - KA, KA, Z[:, None] - KA])
    c = len(sz)
    nonempty = (sz > 0)[:, None] & (sz > 0)[None, :]
    upper = np.triu(np.ones((c, c), bool), 1)  # OR and AND commute: a < b only
    valid = np.stack([upper, upper, ~np.eye(c, dtype=bool)]) & nonempty
    return n, i, valid


def _cheap_bounds(s: _Search, n2, i2) -> np.ndarray:
    """(3, C, C) upper bound on the score of every child of every length-2 prefix, O(1) each:
    AND and AND NOT children lie inside P (overlap <= iP, no false positives needed); an OR
    child `P or c` has overlap <= iP + Z_c and false positives >= max(fP, F_c), so over
    the c with F_c <= fP it is <= (iP + max Z_c) / (tot + fP), and over the others
    <= iP / (tot + fP) + max Z_c / (tot + F_c) (maxima from sorted F)."""
    tot, Z, F = s.total, s.Z, s.sizes - s.Z
    order = np.argsort(F, kind="stable")
    f_sorted = F[order]
    z_upto = np.maximum.accumulate(Z[order])                              # max Z over F <= f
    r_from = np.maximum.accumulate((Z / (tot + F))[order][::-1])[::-1]   # max Z/(tot+F) over F >= f
    fP = n2 - i2
    k = np.searchsorted(f_sorted, fP, side="right")                      # concepts with F <= fP
    z_le = np.where(k > 0, z_upto[np.maximum(k - 1, 0)], 0.0)
    r_gt = np.where(k < len(F), r_from[np.minimum(k, len(F) - 1)], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        b_or = np.maximum(np.minimum(i2 + z_le, tot) / (tot + fP), i2 / (tot + fP) + r_gt)
    return np.maximum(b_or, i2 / tot) * s.factor(3)


def _child_bounds(s: _Search, op: np.ndarray, a: np.ndarray, b: np.ndarray, nP, iP) -> np.ndarray:
    """Upper bound on the score of every child `(a op b) op2 c` of each listed prefix, (P,).

    With P = a op b, Y = |A and P and c| in [yl, yh] and W = |P and c outside A| in
    [wl, wh] from pair counts (F = cells outside A, KF = K - KA):
      OR:      yl = max(KA[a,c], KA[b,c])             wh = min(fP, F_c, KF[a,c] + KF[b,c])
      AND:     yh = min(iP, KA[a,c], KA[b,c])         wl = max(0, fP - (F_a - KF[a,c]), same for b)
      AND NOT: yl = max(0, KA[a,c] - min(KA[b,c], KA[a,b]), iP - (Z_a - KA[a,c]))
               yh = min(iP, KA[a,c])                  wh = min(fP, KF[a,c])
    (the other ends as in the code). A child's overlap and false positives are then
    OR: iP + Z_c - Y, fP + F_c - W;  AND: Y, W;  AND NOT: iP - Y, fP - W.
    """
    Z, KA, tot = s.Z, s.KA, s.total
    F, KF = s.sizes - Z, s.K - s.KA
    c_n = len(Z)
    out = np.zeros(len(a))
    step = max(1, CHUNK // c_n)
    for lo in range(0, len(a), step):
        p = slice(lo, lo + step)
        o, ai, bi = op[p], a[p], b[p]
        ip, fp = iP[p][:, None], (nP[p] - iP[p])[:, None]
        ka_ac, ka_bc, kf_ac, kf_bc = KA[ai], KA[bi], KF[ai], KF[bi]
        za, zb, fa, fb = Z[ai][:, None], Z[bi][:, None], F[ai][:, None], F[bi][:, None]
        ka_ab, kf_ab = KA[ai, bi][:, None], KF[ai, bi][:, None]
        is_or, is_and = (o == 0)[:, None], (o == 1)[:, None]
        # Y and W lower and upper ends, per operator of the prefix
        yl = np.where(is_or, np.maximum(ka_ac, ka_bc), np.where(
            is_and, np.maximum(np.maximum(ip - (za - ka_ac), ip - (zb - ka_bc)), 0),
            np.maximum(np.maximum(ka_ac - np.minimum(ka_bc, ka_ab), ip - (za - ka_ac)), 0)))
        yh = np.where(is_or, np.minimum(np.minimum(ip, Z), ka_ac + ka_bc), np.where(
            is_and, np.minimum(np.minimum(ip, ka_ac), ka_bc), np.minimum(ip, ka_ac)))
        wl = np.where(is_or, np.maximum(kf_ac, kf_bc), np.where(
            is_and, np.maximum(np.maximum(fp - (fa - kf_ac), fp - (fb - kf_bc)), 0),
            np.maximum(np.maximum(kf_ac - np.minimum(kf_bc, kf_ab), fp - (fa - kf_ac)), 0)))
        wh = np.where(is_or, np.minimum(np.minimum(fp, F), kf_ac + kf_bc), np.where(
            is_and, np.minimum(np.minimum(fp, kf_ac), kf_bc), np.minimum(fp, kf_ac)))
        best = np.zeros(yl.shape)
        for inter, false in ((np.minimum(ip + Z - yl, tot), fp + F - wh), (yh, wl), (ip - yl, fp - wh)):
            with np.errstate(invalid="ignore", divide="ignore"):
                np.maximum(best, np.where(inter > 0, inter / (tot + false), 0.0), out=best)
        rows = np.arange(len(ai))
        best[rows, ai] = best[rows, bi] = 0   # c repeats a or b: a shorter formula, searched
        out[p] = best.max(axis=1) * s.factor(3)
    return out


def _generic_bounds(s: _Search, n: np.ndarray, i: np.ndarray, depth: int, r: int) -> np.ndarray:
    """Upper bound on every score in the subtrees of prefixes of length `depth` with
    sizes n and overlaps i (any shape), r more concepts to add."""
    f, tot = n - i, s.total
    fac = max(s.factor(depth + 1), s.factor(depth + r))
    if r >= 2:  # OR then AND can reach any overlap with no false positives
        top = np.sort(s.Z)[::-1][:r].sum()
        return np.minimum(i + top, tot) / tot * fac
    Z, F = s.Z, s.sizes - s.Z
    i_, f_ = i[..., None], f[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        b_or = np.minimum(i_ + Z, tot) / (tot + np.maximum(f_, F))
        b_and = np.minimum(i_, Z) / tot
        b_not = i_ / (tot + np.maximum(f_ - F, 0))
    return np.maximum(np.maximum(b_or, b_and), b_not).max(axis=-1) * fac


def _expand(s: _Search, prefixes: list[Formula], masks: np.ndarray) -> None:
    """Count every child of the prefixes exactly; recurse where the subtree can still win."""
    Z, sz = s.Z, s.sizes
    nP, iP = masks @ s.atoms.cells, masks[:, s.nz] @ s.a[s.nz]
    X = (s.atoms.member.T @ (masks * s.atoms.cells).T).T
    Y = (masks[:, s.nz] * s.a[s.nz]) @ s.Sa
    n = np.stack([nP[:, None] + sz - X, X, nP[:, None] - X], axis=1)   # (B, 3, C)
    i = np.stack([iP[:, None] + Z - Y, Y, iP[:, None] - Y], axis=1)
    ok = np.ones(n.shape, bool)
    for b, p in enumerate(prefixes):
        ok[b, :, list(p.leaves)] = False
    ok &= (sz > 0)[None, None, :]
    depth = len(prefixes[0]) + 1
    iou = s.iou(i, n)
    score = np.where(ok, iou * s.factor(depth), 0.0)
    s.visited += int(ok.sum())
    s.expanded += len(prefixes)
    s.offer(score, iou, lambda t: prefixes[t[0]].extend(OPS[t[1]], t[2]))
    r = s.length - depth
    if r <= 0:
        return
    bound = np.where(ok, _generic_bounds(s, n, i, depth, r), -1.0)
    _branch(s, bound, lambda t: prefixes[t[0]].extend(OPS[t[1]], t[2]),
            lambda idx: _child_masks(s, masks[idx[0]], idx[1], idx[2]))


def _columns(s: _Search, c: np.ndarray) -> np.ndarray:
    """(len(c), G) 0/1 atom masks of concepts c."""
    return s.atoms.columns[:, c].T.toarray()


def _child_masks(s: _Search, m: np.ndarray, op: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(B, G) atom masks of `m[j] OPS[op[j]] c[j]`."""
    col = _columns(s, c)
    return np.where((op == 0)[:, None], np.maximum(m, col), m * np.where((op == 1)[:, None], col, 1 - col))


def _branch(s: _Search, bound: np.ndarray, formula_at, masks_of, refine=None) -> None:
    """Expand the prefixes of `bound` (any shape; < 0: not searched) best bound first,
    while their bound can reach the incumbent; the rest are pruned. `refine(index arrays)`:
    a tighter bound, computed lazily for REFINE prefixes at a time in `bound` order."""
    flat = bound.ravel()
    order = np.argsort(-flat, kind="stable")
    order = order[flat[order] >= 0]
    s.prefixes += len(order)
    k = 0
    while k < len(order) and flat[order[k]] >= s.floor():
        chunk = order[k:k + (REFINE if refine else len(order))]
        chunk = chunk[flat[chunk] >= s.floor()]
        k += len(chunk)
        idx = np.unravel_index(chunk, bound.shape)
        tight = refine(idx) if refine else flat[chunk]
        ranked = np.argsort(-tight, kind="stable")
        j, rounds = 0, 0
        while j < len(ranked) and tight[ranked[j]] >= s.floor():
            size = BATCH[min(rounds, len(BATCH) - 1)]
            rounds += 1
            take = ranked[j:j + size]
            take = take[tight[take] >= s.floor()]
            j += len(take)
            sub = tuple(x[take] for x in idx)
            _expand(s, [formula_at(t) for t in zip(*sub)], masks_of(sub))
        if j < len(ranked):
            s.pruned += len(ranked) - j
            s.max_pruned = max(s.max_pruned, float(tight[ranked[j]]))
    if k < len(order):
        s.pruned += len(order) - k
        s.max_pruned = max(s.max_pruned, float(flat[order[k]]))


def exact_search(A: Bitmap, store: ConceptStore, length: int = 3, penalty: float | None = None,
                 incumbent: Scored | None = None, atoms: Atoms | None = None, counts=None) -> SearchResult:
    """The best formula of length <= `length` (docs/methods.md), proven by `result.proof`.

    `incumbent`: a formula already counted (the beam's best) to start from: it prunes
    from the first prefix on; the result is the same with or without it. `counts`: A's
    `atoms.count`, if already at hand (`count_many` shares one pass among a unit's ranges)."""
    if A.shape != store.shape or A.n_images != store.n_images:
        raise ValueError(f"bitmap {A.n_images}x{A.shape} does not match the store "
                         f"{store.n_images}x{store.shape}")
    if length < 1:
        raise ValueError("length must be >= 1")
    if penalty is not None and not penalty > 0:
        raise ValueError(f"penalty must be > 0, got {penalty}")
    if len(A.ids) == 0:
        return SearchResult(None, 0.0, 0.0, (), 0, 0, dead=True)
    s = _Search(A, store, atoms or atoms_of(store), length, penalty, counts)
    if incumbent is not None and incumbent.score > 0:
        s.best = incumbent
    ious = s.iou(s.Z, s.sizes)
    s.offer(ious * s.factor(1), ious, lambda t: leaf(t[0]))
    s.visited = int((s.sizes > 0).sum())
    if length >= 2:
        n2, i2, valid = _level2(s)
        iou2 = s.iou(i2, n2)
        ops = (OR, AND, AND_NOT)
        s.offer(np.where(valid, iou2 * s.factor(2), 0.0), iou2, lambda t: leaf(t[1]).extend(ops[t[0]], t[2]))
        s.visited += int(valid.sum())
        if length >= 3:
            refine = None
            if length == 3:  # the O(1) bound orders; the O(C) one decides, where it can still win
                bound = np.where(valid, _cheap_bounds(s, n2, i2), -1.0)
                refine = lambda idx: _child_bounds(s, *idx, n2[idx], i2[idx])  # noqa: E731
            else:
                bound = np.where(valid, _generic_bounds(s, n2, i2, 2, length - 2), -1.0)
            _branch(s, bound, lambda t: leaf(t[1]).extend(ops[t[0]], t[2]),
                    lambda idx: _child_masks(s, _columns(s, idx[1]), idx[0], idx[2]), refine)
    proof = Proof(s.prefixes, s.expanded, s.pruned, s.max_pruned)
    if s.best is None:
        return SearchResult(None, 0.0, 0.0, (), s.visited, s.visited - int((s.sizes > 0).sum()), proof=proof)
    b = s.best
    return SearchResult(b.formula, b.iou, b.score, (b,), s.visited, s.visited - int((s.sizes > 0).sum()),
                        proof=proof)
