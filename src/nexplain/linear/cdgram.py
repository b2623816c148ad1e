"""Elastic-net coordinate descent on a Gram matrix, bit for bit scikit-learn's (numba).

A port of scikit-learn 1.9.1's `enet_coordinate_descent_gram` (sklearn/linear_model/_cd_fast.pyx,
BSD-3-Clause) for what `linear.elastic_net` asks of it: one penalty, cyclic order, weights of
any sign, gap-safe screening, a zero start. The same floating-point operations in the same
order (scikit-learn's build has no fused multiply-adds, and numba fuses none without
fastmath) and the same BLAS routines (scipy's ddot, dasum and daxpy, as scikit-learn calls
them), so the weights are those of `enet_path` to the bit (tests/test_linear.py checks).
What differs is not arithmetic:
- Qw = G @ w starts as zeros instead of being computed from the zero start: that product
  read the whole C x C Gram matrix for every unit (564 MB at C = 8,400) and was most of a
  layer's elastic-net time;
- the diagonal of G is read from a copy, not strided from G;
- no draw from NumPy's global random state (scikit-learn seeds its unused random order).
"""

from __future__ import annotations

import math

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address


def _blas(name: str, restype, nargs: int):
    """scipy's Fortran BLAS routine `name` (every argument a pointer), linked by symbol name so
    that the compiled functions can be cached."""
    llvm.add_symbol(f"nexplain_{name}", get_cython_function_address("scipy.linalg.cython_blas", name))
    return types.ExternalFunction(f"nexplain_{name}", restype(*[types.voidptr] * nargs))


_ddot, _dasum, _daxpy = _blas("ddot", types.float64, 5), _blas("dasum", types.float64, 3), _blas("daxpy", types.void, 6)


@njit(cache=True)
def _axpy(a, x, y, scratch, n, one):
    """y += a * x (BLAS daxpy)."""
    scratch[0] = a
    _daxpy(n.ctypes, scratch.ctypes, x.ctypes, one.ctypes, y.ctypes, one.ctypes)


@njit(cache=True)
def _dot(x, y, n, one):
    return _ddot(n.ctypes, x.ctypes, one.ctypes, y.ctypes, one.ctypes)


@njit(cache=True)
def _gap(w, l1, l2, Qw, q, y_norm2, XtA, n, one):
    """(duality gap, max |X^T R - l2 w|) as scikit-learn's `gap_enet_gram` (formulation A);
    fills XtA."""
    w_l2_norm2 = _dot(w, w, n, one) if l2 > 0 else 0.0
    q_dot_w = _dot(w, q, n, one)
    wQw = _dot(w, Qw, n, one)
    R_norm2 = y_norm2 + wQw - 2.0 * q_dot_w
    Ry = y_norm2 - q_dot_w
    for j in range(len(w)):
        XtA[j] = q[j] - Qw[j] - l2 * w[j]
    dual_norm = abs(XtA[0])
    for j in range(1, len(w)):
        if abs(XtA[j]) > dual_norm:
            dual_norm = abs(XtA[j])
    w_l1_norm = _dasum(n.ctypes, w.ctypes, one.ctypes)
    primal = 0.5 * (R_norm2 + l2 * w_l2_norm2) + l1 * w_l1_norm
    scale = l1 / dual_norm if dual_norm > l1 else 1.0
    dual = -0.5 * (scale * scale) * (R_norm2 + l2 * w_l2_norm2) + scale * Ry
    return primal - dual, dual_norm


@njit(cache=True)
def _screen(w, l1, l2, G, diag, Qw, XtA, gap, dual_norm, active, excluded, first, scratch, n, one):
    """Gap-safe screening: the features that may still be non-zero go to `active`, the
    others are set to 0 for good. Returns how many are active."""
    radius = math.sqrt(2 * abs(gap)) / l1
    n_active = 0
    for j in range(len(w)):
        if first and diag[j] == 0:
            w[j] = 0
            excluded[j] = 1
            continue
        if not first and excluded[j]:
            continue
        Xj_theta = XtA[j] / (l1 if l1 > dual_norm else dual_norm)
        d_j = (1 - abs(Xj_theta)) / math.sqrt(diag[j] + l2)
        if d_j <= radius:
            active[n_active] = j
            excluded[j] = 0
            n_active += 1
        else:
            if w[j] != 0:
                _axpy(-w[j], G[j], Qw, scratch, n, one)
                w[j] = 0
            excluded[j] = 1
    return n_active


@njit(cache=True)
def _descend(G, diag, q, y_norm2, l1, l2, max_iter, tol):
    C = len(q)
    w, Qw, XtA = np.zeros(C), np.zeros(C), np.zeros(C)
    scratch, n, one = np.zeros(1), np.array([C], np.int32), np.array([1], np.int32)
    d_w_tol, tol = tol, tol * y_norm2
    gap, dual_norm = _gap(w, l1, l2, Qw, q, y_norm2, XtA, n, one)
    if 0 <= gap <= tol:
        return w, True
    active, excluded = np.empty(C, np.int64), np.empty(C, np.uint8)
    n_active = _screen(w, l1, l2, G, diag, Qw, XtA, gap, dual_norm, active, excluded, True, scratch, n, one)
    for it in range(max_iter):
        w_max = d_w_max = 0.0
        for f in range(n_active):
            j = active[f]
            if diag[j] == 0.0:
                continue
            w_j = w[j]
            tmp = q[j] - Qw[j] + w_j * diag[j]
            shrunk = abs(tmp) - l1
            w[j] = (0.0 if tmp == 0 else 1.0 if tmp > 0 else -1.0) * (shrunk if shrunk > 0 else 0.0) / (diag[j] + l2)
            if w[j] != w_j:
                _axpy(w[j] - w_j, G[j], Qw, scratch, n, one)
            d_w_max = max(d_w_max, abs(w[j] - w_j))
            w_max = max(w_max, abs(w[j]))
        if w_max == 0.0 or d_w_max / w_max <= d_w_tol or it == max_iter - 1:
            gap, dual_norm = _gap(w, l1, l2, Qw, q, y_norm2, XtA, n, one)
            if gap <= tol:
                return w, True
            n_active = _screen(w, l1, l2, G, diag, Qw, XtA, gap, dual_norm, active, excluded, False, scratch, n, one)
    return w, False


def enet_gram(G: np.ndarray, diag: np.ndarray, Xy: np.ndarray, y_norm2: float, l1: float, l2: float,
              max_iter: int, tol: float) -> tuple[np.ndarray, bool]:
    """(w, converged): argmin 1/2 w^T G w - Xy^T w + l1 |w|_1 + l2/2 |w|^2 from w = 0, as
    `enet_path(X, y, precompute=G, Xy=Xy)` with n = len(X): l1 = n * alpha * l1_ratio,
    l2 = n * alpha * (1 - l1_ratio), y_norm2 = y @ y, tol its `tol`. G C-contiguous float64,
    `diag` its diagonal; l1 > 0 (screening is always on, as it is in scikit-learn then)."""
    return _descend(G, diag, Xy, float(y_norm2), float(l1), float(l2), int(max_iter), float(tol))
