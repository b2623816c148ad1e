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


def keep_concepts(P_train: np.ndarray, f: ConceptFilter = ConceptFilter(),
                  what: str = "the concept matrix") -> np.ndarray:
    """(C,) bool: the concepts that pass `f` on the train split (the authors looked at every
    split). Raises DataError, naming `what`, when none does: every explanation would be empty."""
    n, C = P_train.shape
    if n == 0 or C == 0:
        raise DataError(f"{what}: nothing to explain with ({C} concepts, {n} train images); check it and linear.split")
    k = min(f.top, n)
    top_mean = np.empty(C)
    for c in range(0, C, 256):  # column blocks: np.partition copies its input
        block = np.asarray(P_train[:, c:c + 256], np.float64)
        top_mean[c:c + 256] = -np.mean(np.partition(-block, k - 1, axis=0)[:k], axis=0)
    varies = _column_stats(P_train)[1] >= MIN_STD
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


def _column_means(x: np.ndarray) -> np.ndarray:
    total = np.zeros(x.shape[1])
    for s in range(0, len(x), ROWS_PER_CHUNK):
        total += np.asarray(x[s:s + ROWS_PER_CHUNK], np.float64).sum(0)
    return total / max(len(x), 1)


def _column_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per column in float64, one chunk of rows at a time."""
    n, sq, mean = len(x), np.zeros(x.shape[1]), _column_means(x)
    for s in range(0, n, ROWS_PER_CHUNK):
        sq += ((np.asarray(x[s:s + ROWS_PER_CHUNK], np.float64) - mean) ** 2).sum(0)
    return mean, np.sqrt(sq / max(n, 1))


def _varies(std, mean):
    """A std above rounding noise: a constant column's centred values are not exactly 0."""
    return np.asarray(std) > 1e-9 * np.abs(mean)


class _Moments:
    """Means and centred cross products of one split (P restricted to the kept concepts):
    every least-squares fit and correlation on that split follows from them."""

    def __init__(self, mp, mq, pp, pq, qq, n: int):
        self.mp, self.mq, self.pp, self.pq, self.qq, self.n = mp, mq, pp, pq, qq, n

    @classmethod
    def of(cls, P: np.ndarray, Q: np.ndarray) -> _Moments:
        mp, mq = _column_means(P), _column_means(Q)
        pp, pq = np.zeros((P.shape[1],) * 2), np.zeros((P.shape[1], Q.shape[1]))
        qq = np.zeros(Q.shape[1])
        for s in range(0, len(P), ROWS_PER_CHUNK):
            Pc = np.asarray(P[s:s + ROWS_PER_CHUNK], np.float64) - mp
            Qc = np.asarray(Q[s:s + ROWS_PER_CHUNK], np.float64) - mq
            pp += Pc.T @ Pc
            pq += Pc.T @ Qc
            qq += (Qc * Qc).sum(0)
        return cls(mp, mq, pp, pq, qq, len(P))

    @np.errstate(invalid="ignore", divide="ignore")
    def standardised(self, n: int):
        """(X^T X, X^T Y, live concepts, live units) of z-scored P and Q (std over n rows).
        Entries of constant columns are meaningless; the masks say which vary."""
        sp, sq = np.sqrt(np.diag(self.pp) / n), np.sqrt(self.qq / n)
        return self.pp / np.outer(sp, sp), self.pq / np.outer(sp, sq), _varies(sp, self.mp), _varies(sq, self.mq)

    def corr(self, S: np.ndarray, w: np.ndarray, u: int) -> np.ndarray:
        """Pearson correlation with unit u of P[:, S[i]] w[i] (+ any bias); S, w are (m, k)."""
        cov = np.einsum("mk,mk->m", w, self.pq[S, u])
        var = np.einsum("mk,mkl,ml->m", w, self.pp[S[:, :, None], S[:, None, :]], w)
        with np.errstate(invalid="ignore", divide="ignore"):
            return cov / np.sqrt(var * self.qq[u])


def elastic_net(P: np.ndarray, Q: np.ndarray, s: LinearSettings = LinearSettings(),
                moments: _Moments | None = None, progress: bool = False) -> np.ndarray:
    """Elastic-net weights (C, U) for every unit (columns of Q) on standardised P and Q.

    Coordinate descent on the Gram matrix (scikit-learn's `enet_path`), which is all the
    solver reads besides each unit's targets, so P is never copied whole in float64 and
    the train moments of the greedy search come from the same pass. Constant concepts
    get weight 0; a constant unit gets all zeros."""
    from sklearn.linear_model import enet_path  # slow import, only needed here

    m = moments or _Moments.of(P, Q)
    n = len(P)
    G, XY, live_c, live_u = m.standardised(n)
    cols, units = np.flatnonzero(live_c), np.flatnonzero(live_u)
    W = np.zeros((P.shape[1], Q.shape[1]))
    if len(cols) == 0 or len(units) == 0:
        return W
    G = np.ascontiguousarray(G[np.ix_(cols, cols)])
    shape_only = np.broadcast_to(np.zeros(1), (n, len(cols)))  # the Gram path reads only its shape
    sq = np.sqrt(m.qq / n)
    for u in tqdm(units, desc="elastic net", disable=not progress):
        y = (np.asarray(Q[:, u], np.float64) - m.mq[u]) / sq[u]
        _, coefs, _ = enet_path(shape_only, y, l1_ratio=s.alpha, alphas=[s.lam], precompute=G,
                                Xy=np.ascontiguousarray(XY[cols, u]), max_iter=s.max_iter, tol=s.cd_tol,
                                check_input=False)
        W[cols, u] = coefs[:, 0]
    return W


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
    banned = ~np.asarray(allowed, bool)
    best, fit = 0.0, None
    order = np.argsort(-weights, kind="stable")  # highest weight first, ties by id
    while len(chosen) < s.v:
        free = order[~banned[order]]
        free = free[~np.isin(free, chosen)][:s.r]
        if len(free) == 0:
            break
        sets = np.column_stack([np.tile(chosen, (len(free), 1)).astype(np.int64), free])
        w, b = least_squares(train, sets, u)
        rho = np.nan_to_num(val.corr(sets, w, u), nan=-np.inf)
        bad = rho < best + s.tol
        banned[free[bad]] = True
        if bad.all():
            break
        j = int(np.argmax(np.where(bad, -np.inf, rho)))
        chosen.append(int(free[j]))
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
    elastic-net weights (C, U). Memory: the train rows of P once in their own dtype, and
    C x C and C x U float64 products for train and val. `matrix` and `activations` name the
    inputs in errors: non-finite values, or no concept passing `s.concept_filter`."""
    Q = np.asarray(Q, np.float64)
    _refuse_non_finite(_column_means(P), matrix, "concepts", "a concept matrix holds probabilities: rebuild it")
    _refuse_non_finite(Q.sum(0), activations, "units", "NaN is not a dead unit: check the model and re-extract")
    tr, va = masks["train"], masks["val"]
    P_tr = np.asarray(P)[tr]
    keep = keep_concepts(P_tr, s.concept_filter, matrix)
    cols = np.flatnonzero(keep)
    P_tr = P_tr[:, cols] if len(cols) < P_tr.shape[1] else P_tr
    train = _Moments.of(P_tr, Q[tr])
    W = np.zeros((P.shape[1], Q.shape[1]))
    W[cols] = elastic_net(P_tr, Q[tr], s, moments=train, progress=progress)
    del P_tr
    val = _Moments.of(np.asarray(P)[va][:, cols], Q[va])
    allowed = np.ones(len(cols), bool)
    out = []
    for u in tqdm(range(Q.shape[1]), desc="greedy search", disable=not progress):
        e = greedy(W[cols, u], train, val, u, allowed, s)
        out.append(Explanation(tuple(int(cols[c]) for c in e.concepts), e.weights, e.bias,
                               e.train_corr, e.val_corr, e.dead))
    _log_unexplained(out, s)
    return out, keep, W


def _refuse_non_finite(column_sums: np.ndarray, what: str, kind: str, fix: str) -> None:
    """A NaN would pass for a dead unit or a constant concept: refuse it, naming the input."""
    bad = np.flatnonzero(~np.isfinite(column_sums))
    if len(bad):
        raise DataError(f"{what}: {len(bad)} of its {len(column_sums)} {kind} hold NaN or infinite values "
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
