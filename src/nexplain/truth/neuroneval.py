"""The explanation metrics that pass NeuronEval's sanity checks: Pearson, cosine, AUPRC, F1, IoU.

Each compares an explanation's predicted concept activation per image (`pred`) with what
the unit does (`act`: a planted function, or a natural unit's activation). Where the unit
fires is fixed per unit, whatever the explanation: a planted function's positive images, or
a natural unit's top FIRES_ALPHA share of each split. AUPRC ranks the images by `pred`
against those; F1 and IoU binarise `pred` at its top-alpha share of images, alpha tuned on
val (NeuronEval's thresholding), then scored on test. A constant vector has no correlation:
Pearson is 0 there, not NaN, and AUPRC is the share of images where the unit fires (cosine
is not 0 for non-negative vectors: it is no chance measure).
"""

from __future__ import annotations

import numpy as np

from nexplain.linear import simulate

ALPHAS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
FIRES_ALPHA = 0.05  # a natural unit fires on its top 5% of images
METRICS = ("pearson", "cosine", "auprc", "f1", "iou")


def pearson(x, y) -> float:
    r = simulate.pearson(x, y)
    return 0.0 if np.isnan(r) else r


def cosine(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = np.linalg.norm(x) * np.linalg.norm(y)
    return float(x @ y / n) if n > 0 else 0.0


def auprc(scores, labels) -> float:
    """Average precision of `scores` ranking the positive `labels` (ties share their precision);
    NaN when there is no positive."""
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels, bool)
    if not labels.any():
        return float("nan")
    return float(average_precision_score(labels, np.asarray(scores, np.float64)))


def top(x, alpha: float) -> np.ndarray:
    """Bool: x at or above its top-alpha quantile and above its minimum (a constant vector fires nowhere
    when alpha < 1, as it ranks no image above another)."""
    x = np.asarray(x, np.float64)
    if len(x) == 0:
        return np.zeros(0, bool)
    tau = np.quantile(x, 1 - alpha, method="higher")
    return (x >= tau) & (x > x.min())


def f1_iou(a, b) -> tuple[float, float]:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    inter, union, total = (a & b).sum(), (a | b).sum(), a.sum() + b.sum()
    return (float(2 * inter / total) if total else 0.0), (float(inter / union) if union else 0.0)


def fires(act, splits: dict[str, np.ndarray], alpha: float = FIRES_ALPHA) -> np.ndarray:
    """A natural unit's firing images: its top-alpha share of each split's images where it is positive."""
    act = np.asarray(act, np.float64)
    on = np.zeros(len(act), bool)
    for m in splits.values():
        on[m] = top(act[m], alpha) & (act[m] > 0)
    return on


def tune_alpha(pred_val, on_val, alphas=ALPHAS) -> float:
    """The alpha of best val F1 of the top-alpha images by `pred` against `on_val` (ties: the smaller alpha)."""
    best, best_f1 = alphas[0], -1.0
    for a in alphas:
        f1 = f1_iou(top(pred_val, a), on_val)[0]
        if f1 > best_f1 + 1e-12:
            best, best_f1 = a, f1
    return best


def scores(pred, act, splits: dict[str, np.ndarray], on=None) -> dict[str, float]:
    """The five metrics on test, alpha tuned on val; plus alpha and the test share where the unit fires
    (AUPRC's chance level). `on`: where the unit fires (bool per image); default `fires(act)`."""
    pred, act = np.asarray(pred, np.float64), np.asarray(act, np.float64)
    on = fires(act, splits) if on is None else np.asarray(on, bool)
    val, test = splits["val"], splits["test"]
    alpha = tune_alpha(pred[val], on[val])
    p, a, o = pred[test], act[test], on[test]
    f1, iou = f1_iou(top(p, alpha), o)
    return {"pearson": pearson(p, a), "cosine": cosine(p, a), "auprc": auprc(p, o), "f1": f1, "iou": iou,
            "alpha": alpha, "base_rate": float(o.mean()) if len(o) else float("nan")}
