"""Linear Explanations (docs/methods.md): each unit as a short weighted sum of concepts.

Concepts first pass `ConceptFilter` (`linear.concept_filter`) on the train split; a filter
that keeps none is an error, not a layer of empty explanations. Then two steps for all units:

1. `elastic_net`: on standardised train data (concepts and activations), minimise per unit
   1/(2 N) ||P w - q||^2 + lam * ((1 - alpha)/2 ||w||^2 + alpha ||w||_1)
   (glm-saga's mean loss, scikit-learn's `ElasticNet` objective with alpha=lam,
   l1_ratio=alpha), by coordinate descent on the shared Gram matrix.
2. `greedy`: Algorithm 1 of the paper. Candidates are the `r` highest-weight concepts not
   chosen and not banned; each candidate set is fitted by least squares with intercept on
   train and scored by Pearson correlation on val. All of it comes from the split's
   centred cross-product matrices, so a candidate costs a k x k solve (k <= v), not a
   pass over the data. Returns the concepts actually chosen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from nexplain.errors import ConfigError, DataError

log = logging.getLogger(__name__)


MIN_STD = 1e-5  # a concept's least train std (docs/methods.md)


@dataclass(frozen=True)
class ConceptFilter:
    """`linear.concept_filter`: keep a concept whose `top` largest train values average at
    least `min_mean` (and whose train std is >= MIN_STD)."""
    top: int = 5
    min_mean: float = 0.5

    def __post_init__(self):
        if not (isinstance(self.top, (int, np.integer)) and self.top >= 1 and 0 <= self.min_mean <= 1):
            raise ConfigError(f"linear.concept_filter: need top >= 1 and 0 <= min_mean <= 1, "
                              f"got top={self.top}, min_mean={self.min_mean}")

    def __str__(self) -> str:
        return f"{{top: {self.top}, min_mean: {self.min_mean}}}"


@dataclass(frozen=True)
class LinearSettings:
    lam: float = 0.05       # the authors' lambda
    alpha: float = 0.99     # share of L1 in the elastic net
    v: int = 10             # most concepts in an explanation
    r: int = 10             # candidates per greedy round
    tol: float = 0.02       # least gain in val correlation to add a concept
    max_iter: int = 1000    # coordinate descent sweeps
    cd_tol: float = 1e-6    # coordinate descent stopping tolerance (scikit-learn's `tol`)
    concept_filter: ConceptFilter = ConceptFilter()  # or the config's dict

    def __post_init__(self):
        if not self.lam > 0 or not 0 < self.alpha <= 1:
            raise ConfigError(f"linear: need lam > 0 and 0 < alpha <= 1, got lam={self.lam}, alpha={self.alpha}")
        if self.v < 1 or self.r < 1 or self.tol < 0:
            raise ConfigError(f"linear: need v >= 1, r >= 1, tol >= 0, got v={self.v}, r={self.r}, tol={self.tol}")
        f = self.concept_filter
        if isinstance(f, dict) and set(f) <= {"top", "min_mean"}:  # as the rule's params carry it
            object.__setattr__(self, "concept_filter", ConceptFilter(**f))
        elif not isinstance(f, ConceptFilter):
            raise ConfigError(f"linear.concept_filter: need {{top: <int>, min_mean: <number>}}, got {f!r}")


def keep_concepts(P: np.ndarray, f: ConceptFilter = ConceptFilter(), what: str = "the concept matrix",
                  rows: np.ndarray | None = None, means: np.ndarray | None = None) -> np.ndarray:
    """(C,) bool: the concepts that pass `f` on the train split, P's `rows` (default all), read a
    block at a time and never copied whole (the authors looked at every split); `means`: their
    column means, if known. Raises DataError, naming `what`, when none does: every explanation
    would be empty."""
    n, C = (len(P) if rows is None else len(rows)), P.shape[1]
    if n == 0 or C == 0:
        raise DataError(f"{what}: nothing to explain with ({C} concepts, {n} train images); check it and linear.split")
    k = min(f.top, n)
    top_mean = np.empty(C)
    for c in range(0, C, 256):  # column blocks: np.partition copies its input
        block = np.asarray(P[:, c:c + 256] if rows is None else P[rows, c:c + 256], np.float64)
        top_mean[c:c + 256] = -np.mean(np.partition(-block, k - 1, axis=0)[:k], axis=0)
    varies = _column_stats(P, rows, means)[1] >= MIN_STD
    keep = (top_mean >= f.min_mean) & varies
    if not keep.any():
        raise DataError(_nothing_kept(what, f, top_mean, varies))
    return keep


def _nothing_kept(what: str, f: ConceptFilter, top_mean: np.ndarray, varies: np.ndarray) -> str:
    head = f"{what}: none of its {len(top_mean)} concepts passes linear.concept_filter {f}"
    if not varies.any():
        return f"{head}: every concept is constant on the train split (std < {MIN_STD:g}); fix the concept matrix"
    best = float(top_mean[varies].max())
    scope = "" if varies.all() else f" (of the {int(varies.sum())} that vary on train)"
    return (f"{head}: the largest mean of a concept's top {f.top} train values is {best:.3g}{scope}; "
            f"lower linear.concept_filter.min_mean to {_floor3(best):g} or less")


def _floor3(x: float) -> float:
    """x rounded down to 3 significant digits: a min_mean that keeps the best concept."""
    if x <= 0:
        return 0.0
    step = 10.0 ** (np.floor(np.log10(x)) - 2)
    return float(np.floor(x / step) * step)


ROWS_PER_CHUNK = 2048  # rows of P standardised at a time: bounds float64 copies at any size


def _chunks(x: np.ndarray, rows: np.ndarray | None = None, cols: np.ndarray | None = None):
    """x[rows][:, cols] in float64, ROWS_PER_CHUNK rows at a time, each block gathered on its
    own (the selected rows are never copied whole) and the caller's to change. The blocks
    (and so every sum over them) are the same whether x or x[rows][:, cols] is passed."""
    n = len(x) if rows is None else len(rows)
    for s in range(0, n, ROWS_PER_CHUNK):
        block = x[s:s + ROWS_PER_CHUNK] if rows is None else x[rows[s:s + ROWS_PER_CHUNK]]
        block = block if cols is None else block[:, cols]
        yield block.astype(np.float64, copy=np.may_share_memory(block, x))


def _column_means(x: np.ndarray, rows=None, cols=None) -> np.ndarray:
    total = np.zeros(x.shape[1] if cols is None else len(cols))
    for block in _chunks(x, rows, cols):
        total += block.sum(0)
    return total / max(len(x) if rows is None else len(rows), 1)


def _column_stats(x: np.ndarray, rows=None, mean=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean (unless given) and std per column of x[rows] in float64, one chunk of rows at a time."""
    n, sq = (len(x) if rows is None else len(rows)), np.zeros(x.shape[1])
    mean = _column_means(x, rows) if mean is None else mean
    for block in _chunks(x, rows):
        sq += ((block - mean) ** 2).sum(0)
    return mean, np.sqrt(sq / max(n, 1))


def _varies(std, mean):
    """A std above rounding noise: a constant column's centred values are not exactly 0."""
    return np.asarray(std) > 1e-9 * np.abs(mean)


class _Symmetric:
    """A symmetric n x n matrix kept as its upper triangle: blocks of B rows, each stored from
    the block's first diagonal entry to the end of the row. About half the memory, the same
    entries: the cross products summed here are exactly symmetric (NumPy computes X^T X with
    BLAS syrk and mirrors the triangle), so (i, j) and (j, i) of the full matrix are equal."""

    B = 256

    def __init__(self, n: int):
        tops = np.arange(0, n, self.B)
        sizes = np.minimum(self.B, n - tops) * (n - tops)
        self.n, self.tops, self.ends = n, tops, np.cumsum(sizes)
        i = np.arange(n)
        self.first = i // self.B * self.B  # the first column stored for row i
        self.start = (self.ends - sizes)[i // self.B] + (i % self.B) * (n - self.first)  # where row i begins
        self.data = np.zeros(int(sizes.sum()))

    def blocks(self):
        """(first row, the block as an array: rows first..first+B, columns first..n)."""
        for top, end in zip(self.tops, self.ends):
            width = self.n - top
            yield top, self.data[end - min(self.B, self.n - top) * width:end].reshape(-1, width)

    def add(self, full: np.ndarray) -> None:
        """+= a symmetric n x n matrix."""
        for top, block in self.blocks():
            block += full[top:top + len(block), top:]

    def diagonal(self) -> np.ndarray:
        return self[np.arange(self.n), np.arange(self.n)]

    def __getitem__(self, ij) -> np.ndarray:
        """The full matrix's entries at index arrays (i, j), broadcast together."""
        i, j = np.broadcast_arrays(*ij)
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        return self.data[self.start[lo] + (hi - self.first[lo])]

    def scaled(self, d: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The full matrix among `cols` (ascending), entry (i, j) divided by d[i] * d[j]."""
        if len(cols) < self.n:  # only where a concept does not vary: entry by entry
            return np.concatenate([self[rows[:, None], cols] / np.outer(d[rows], d[cols])
                                   for rows in np.array_split(cols, max(1, len(cols) // self.B))])
        out = np.empty((self.n, self.n))
        for top, block in self.blocks():  # from the diagonal on: the block; left of it: mirrored
            out[top:top + len(block), top:] = block / np.outer(d[top:top + len(block)], d[top:])
            out[top:top + len(block), :top] = out[:top, top:top + len(block)].T
        return out


class _Moments:
    """Means and centred cross products of one split (P restricted to the kept concepts):
    every least-squares fit and correlation on that split follows from them."""

    def __init__(self, mp, mq, pp: _Symmetric, pq, qq, n: int):
        self.mp, self.mq, self.pp, self.pq, self.qq, self.n = mp, mq, pp, pq, qq, n

    @classmethod
    def of(cls, P: np.ndarray, Q: np.ndarray, rows: np.ndarray | None = None,
           cols: np.ndarray | None = None, mp: np.ndarray | None = None) -> _Moments:
        """The moments of P[rows][:, cols] and Q[rows] (`mp`: P's column means there, if known),
        a chunk of rows at a time. Memory: the C x C product of one chunk and half of it for
        the sum."""
        mp = _column_means(P, rows, cols) if mp is None else mp
        mq = _column_means(Q, rows)
        pp, pq = _Symmetric(len(mp)), np.zeros((len(mp), len(mq)))
        qq, prod = np.zeros(len(mq)), None
        for Pc, Qc in zip(_chunks(P, rows, cols), _chunks(Q, rows)):
            Pc -= mp
            Qc -= mq
            prod = np.matmul(Pc.T, Pc, out=prod)  # one C x C buffer for all chunks, not a fresh one each
            pp.add(prod)
            pq += Pc.T @ Qc
            qq += (Qc * Qc).sum(0)
        return cls(mp, mq, pp, pq, qq, len(P) if rows is None else len(rows))

    @np.errstate(invalid="ignore", divide="ignore")
    def standardised(self):
        """(X^T X, X^T Y, live concepts, live units) of z-scored P and Q: X^T X among the live
        (varying) concepts only, X^T Y for all (entries of constant columns are meaningless)."""
        sp, sq = np.sqrt(self.pp.diagonal() / self.n), np.sqrt(self.qq / self.n)
        cols, units = np.flatnonzero(_varies(sp, self.mp)), np.flatnonzero(_varies(sq, self.mq))
        G = self.pp.scaled(sp, cols)
        return G, self.pq / np.outer(sp, sq), cols, units

    def corr(self, S: np.ndarray, w: np.ndarray, u: int) -> np.ndarray:
        """Pearson correlation with unit u of P[:, S[i]] w[i] (+ any bias); S, w are (m, k)."""
        cov = np.einsum("mk,mk->m", w, self.pq[S, u])
        var = np.einsum("mk,mkl,ml->m", w, self.pp[S[:, :, None], S[:, None, :]], w)
        with np.errstate(invalid="ignore", divide="ignore"):
            return cov / np.sqrt(var * self.qq[u])


def elastic_net(P: np.ndarray, Q: np.ndarray, s: LinearSettings = LinearSettings(),
                moments: _Moments | None = None, progress: bool = False,
                rows: np.ndarray | None = None) -> np.ndarray:
    """Elastic-net weights (C, U) for every unit (columns of Q) on standardised P[rows], Q[rows]
    (`moments` their moments, if computed already); unit-major in memory, a transposed view.

    Coordinate descent on the Gram matrix (`cdgram.enet_gram`: scikit-learn's `enet_path`
    to the bit), which is all the solver reads besides each unit's targets, so P is never
    copied whole in float64 and the train moments of the greedy search come from the same
    pass. Constant concepts get weight 0; a constant unit gets all zeros."""
    from nexplain.linear.cdgram import enet_gram  # compiles on first use

    m = moments or _Moments.of(P, Q, rows)
    G, XY, cols, units = m.standardised()
    Wt = np.zeros((len(m.mq), len(m.mp)))  # a unit per row: each unit's weights written contiguously
    if len(cols) == 0 or len(units) == 0:
        return Wt.T
    diag, Xy = G.diagonal().copy(), np.ascontiguousarray(XY[cols].T)  # Xy[u]: unit u's X^T y, contiguous
    del XY
    l1, l2 = s.lam * s.alpha * m.n, s.lam * (1.0 - s.alpha) * m.n  # enet_path's penalties on the summed loss
    stuck = 0
    for u, y in tqdm(_standardised_units(Q, m, units, rows), total=len(units), desc="elastic net",
                     disable=not progress):
        Wt[u, cols], converged = enet_gram(G, diag, Xy[u], np.dot(y, y), l1, l2, s.max_iter, s.cd_tol)
        stuck += not converged
    if stuck:
        log.warning("elastic net: %d of %d units not converged in linear.max_iter=%d sweeps (cd_tol %g)",
                    stuck, len(units), s.max_iter, s.cd_tol)
    return Wt.T


def _standardised_units(Q: np.ndarray, m: _Moments, units: np.ndarray, rows: np.ndarray | None, block: int = 64):
    """(u, z-scored Q[rows, u] as a contiguous float64 vector) for each unit in `units`,
    gathered `block` units at a time (Q[rows] is never copied whole)."""
    sq = np.sqrt(m.qq / m.n)
    for i in range(0, len(units), block):
        us = units[i:i + block]
        Y = np.asarray(Q[:, us] if rows is None else Q[np.ix_(rows, us)], np.float64)
        Y = (Y - m.mq[us]) / sq[us]
        for j, u in enumerate(us):
            yield u, np.ascontiguousarray(Y[:, j])


def least_squares(m: _Moments, S: np.ndarray, u: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact least-squares fits with intercept: S is (m, k) candidate sets; returns
    weights (m, k) and biases (m,). Collinear sets get the minimum-norm solution."""
    A = m.pp[S[:, :, None], S[:, None, :]]
    w = np.einsum("mkl,ml->mk", np.linalg.pinv(A, hermitian=True), m.pq[S, u])
    return w, m.mq[u] - np.einsum("mk,mk->m", w, m.mp[S])


@dataclass(frozen=True)
class Explanation:
    concepts: tuple[int, ...]
    weights: tuple[float, ...]
    bias: float
    train_corr: float
    val_corr: float
    dead: bool = False


def greedy(weights: np.ndarray, train: _Moments, val: _Moments, u: int, allowed: np.ndarray,
           s: LinearSettings = LinearSettings()) -> Explanation:
    """Algorithm 1 for unit u: `weights` (C,) from the elastic net, `allowed` (C,) bool."""
    if not _varies(np.sqrt(train.qq[u] / train.n), train.mq[u]):
        return Explanation((), (), float(train.mq[u]), float("nan"), float("nan"), dead=True)
    chosen: list[int] = []
    taken = ~np.asarray(allowed, bool)  # banned or chosen
    best, fit = 0.0, None
    order = np.argsort(-weights, kind="stable")  # highest weight first, ties by id
    while len(chosen) < s.v:
        free = order[~taken[order]][:s.r]
        if len(free) == 0:
            break
        sets = np.column_stack([np.tile(chosen, (len(free), 1)).astype(np.int64), free])
        w, b = least_squares(train, sets, u)
        rho = np.nan_to_num(val.corr(sets, w, u), nan=-np.inf)
        bad = rho < best + s.tol
        taken[free[bad]] = True
        if bad.all():
            break
        j = int(np.argmax(np.where(bad, -np.inf, rho)))
        chosen.append(int(free[j]))
        taken[free[j]] = True
        best, fit = float(rho[j]), (w[j], float(b[j]))
    if fit is None:
        return Explanation((), (), float(train.mq[u]), float("nan"), float("nan"))
    rho_train = train.corr(np.array([chosen]), fit[0][None], u)[0]
    return Explanation(tuple(chosen), tuple(float(x) for x in fit[0]), fit[1], float(rho_train), best)


def explain_units(P: np.ndarray, Q: np.ndarray, masks: dict[str, np.ndarray],
                  s: LinearSettings = LinearSettings(), progress: bool = False,
                  matrix: str = "the concept matrix",
                  activations: str = "the activations") -> tuple[list[Explanation], np.ndarray, np.ndarray]:
    """LE for every unit: P (N, C) concepts, Q (N, U) activations, `masks` from
    `nexplain.splits.split_masks`. Returns explanations, the kept-concept mask and the
    elastic-net weights (C, U). Memory besides P and Q: float64 blocks of rows, the C x C
    product of one block, half of that (a symmetric sum) per split, the elastic net's C x C
    Gram matrix while it runs, and C x U products. `matrix` and `activations` name the
    inputs in errors: non-finite values, or no concept passing `s.concept_filter`."""
    P, Q = np.asarray(P), np.asarray(Q)
    _refuse_non_finite(P, matrix, "concepts", "a concept matrix holds probabilities: rebuild it")
    _refuse_non_finite(Q, activations, "units", "NaN is not a dead unit: check the model and re-extract")
    tr, va = np.flatnonzero(masks["train"]), np.flatnonzero(masks["val"])
    means = _column_means(P, tr)  # a column's sum runs down its rows alone: the same for any column subset
    keep = keep_concepts(P, s.concept_filter, matrix, rows=tr, means=means)
    cols = np.flatnonzero(keep)
    # The column gather makes the blocks column-major, which BLAS sums in another order: train
    # gathers only when concepts were dropped, val always, as the explanations were first made.
    train = _Moments.of(P, Q, tr, cols if len(cols) < P.shape[1] else None, mp=means[cols])
    W_kept = elastic_net(P, Q, s, moments=train, progress=progress, rows=tr)  # unit-major: contiguous columns
    val = _Moments.of(P, Q, va, cols)
    allowed = np.ones(len(cols), bool)
    out = []
    for u in tqdm(range(Q.shape[1]), desc="greedy search", disable=not progress):
        e = greedy(W_kept[:, u], train, val, u, allowed, s)
        out.append(Explanation(tuple(int(cols[c]) for c in e.concepts), e.weights, e.bias,
                               e.train_corr, e.val_corr, e.dead))
    _log_unexplained(out, s)
    W = np.zeros((P.shape[1], Q.shape[1]))
    W[cols] = W_kept
    return out, keep, W


def _refuse_non_finite(x: np.ndarray, what: str, kind: str, fix: str) -> None:
    """A NaN would pass for a dead unit or a constant concept: refuse it, naming the input.
    Checked in x's own dtype, a chunk of rows at a time (no float64 copy)."""
    finite = np.ones(x.shape[1], bool)
    for s in range(0, len(x), ROWS_PER_CHUNK):
        finite &= np.isfinite(x[s:s + ROWS_PER_CHUNK]).all(0)
    bad = np.flatnonzero(~finite)
    if len(bad):
        raise DataError(f"{what}: {len(bad)} of its {x.shape[1]} {kind} hold NaN or infinite values "
                        f"(first: {kind[:-1]} {bad[0]}); {fix}")


def _log_unexplained(exps: list[Explanation], s: LinearSettings) -> None:
    """Units whose correlations are NaN, said in the log: dead ones (flagged in the table) and
    live ones no concept explains (length 0, not dead)."""
    dead = [u for u, e in enumerate(exps) if e.dead]
    empty = [u for u, e in enumerate(exps) if not e.dead and not e.concepts]
    if dead:
        log.info("%d of %d units are dead (constant on train): no explanation, correlations NaN (first: %s)",
                 len(dead), len(exps), dead[:10])
    if empty:
        log.warning("%d of %d units have no explanation: no concept raises their val correlation by tol=%g; "
                    "correlations NaN (first: %s)", len(empty), len(exps), s.tol, empty[:10])


def aligned(ids: np.ndarray, other_ids: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
    """Rows of `values` (indexed by `other_ids`) in the order of `ids`; every id must be there."""
    pos = {int(i): k for k, i in enumerate(other_ids)}
    missing = [int(i) for i in ids if int(i) not in pos]
    if missing:
        raise DataError(f"{what} lacks {len(missing)} of the activations' images (first: {missing[0]})")
    return np.asarray(values)[[pos[int(i)] for i in ids]]


def linear_table(explanations: list[Explanation], names: list[str], keep: np.ndarray, W: np.ndarray):
    """One row per unit: concepts, their ids and weights, bias (raw units), length, train and
    val correlation, dead; plus how many concepts passed the filter and the elastic net's
    non-zeros. The correlations are NaN exactly where the explanation is empty: a dead unit
    (constant on train; bias = its value) or a live one that no concept explains (length 0)."""
    import pandas as pd

    return pd.DataFrame({
        "unit": np.arange(len(explanations), dtype=np.int32),
        "concepts": [[names[c] for c in e.concepts] for e in explanations],
        "concept_ids": [np.array(e.concepts, np.int32) for e in explanations],
        "weights": [np.array(e.weights, np.float64) for e in explanations],
        "bias": [e.bias for e in explanations],
        "length": np.array([len(e.concepts) for e in explanations], np.int32),
        "train_corr": [e.train_corr for e in explanations],
        "val_corr": [e.val_corr for e in explanations],
        "dead": [e.dead for e in explanations],
        "n_concepts_kept": np.full(len(explanations), int(keep.sum()), np.int32),
        "enet_nonzero": (W != 0).sum(axis=0).astype(np.int32),
    })
