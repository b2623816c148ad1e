"""Linear Explanations at the issue's sizes: seconds per unit, peak memory, planted recovery.

Usage: python benchmarks/bench_linear.py [--images 5000] [--concepts 800] [--units 512]
           [--threads 2] [--seed 0] [--digest] [--glm-saga N [--glm-epochs 500]]

glm-saga (the authors' elastic-net solver) for the side-by-side, benchmark only:
    .venv/bin/pip install --no-deps --target benchmarks/out/glm glm-saga

Synthetic data like a probe set: P (N x C) mixes sparse binary labels and smooth VLM-like
scores in [0, 1]; every unit is a non-negative combination of 1-6 concepts plus noise,
some plus a ReLU, a few constant (dead). The split is 70/10/20, so --images 5000 gives the
issue's 3,500 train images. Timed: `nexplain.linear.linear.explain_units` (filter, moments,
elastic net for all units, greedy search), end to end, amortised per unit; peak RSS from
/proc. Reported besides: how often the greedy search finds the planted concepts, and with
--digest a SHA-256 of the output (explanations, kept concepts, elastic-net weights) to the bit:
run two versions of the code on the same arguments and compare.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from nexplain.linear.linear import LinearSettings, explain_units  # noqa: E402
from nexplain.splits import make_splits, split_masks  # noqa: E402


def make_data(rng, n, c, u):
    P = np.empty((n, c), np.float32)
    binary = rng.random(c) < 0.5
    for j in range(c):  # column by column: no float64 N x C temporary
        if binary[j]:
            P[:, j] = rng.random(n) < rng.uniform(0.01, 0.3)
        else:
            P[:, j] = rng.beta(0.5, rng.uniform(0.5, 4), n)
    Q = np.empty((n, u), np.float32)
    planted = []
    for k in range(u):
        idx = rng.choice(c, rng.integers(1, 7), replace=False)
        w = rng.uniform(0.5, 2.0, len(idx))
        q = P[:, idx] @ w + rng.normal(0, 0.3, n)
        if k % 3 == 0:
            q = np.maximum(q, 0)
        if k % 50 == 49:
            q = np.full(n, 0.25)  # dead
        Q[:, k] = q
        planted.append(set(idx.tolist()))
    return P, Q, planted


def enet_objective(X, y, w, b, lam, alpha):
    """1/(2N) ||X w + b - y||^2 + lam (alpha |w|_1 + (1 - alpha)/2 |w|^2): ours and glm-saga's."""
    r = X @ w + b - y
    return 0.5 * np.mean(r * r) + lam * (alpha * np.abs(w).sum() + 0.5 * (1 - alpha) * (w * w).sum())


def glm_saga_side_by_side(P, Q, masks, n_units, epochs, lr):
    """The authors' elastic-net solver (glm-saga's `train_saga`, gaussian family, one neuron
    at a time as they ran it) beside ours on the same standardised train data."""
    import torch
    sys.path.insert(0, str(REPO / "benchmarks" / "out" / "glm"))
    from glm_saga.elasticnet import IndexedTensorDataset, train_saga

    from nexplain.linear.linear import elastic_net
    tr = masks["train"]
    X = (P[tr] - P[tr].mean(0)) / P[tr].std(0)
    Y = (Q[tr] - Q[tr].mean(0)) / np.where(Q[tr].std(0) > 0, Q[tr].std(0), 1)
    units = [u for u in range(Q.shape[1]) if Q[tr][:, u].std() > 0][:n_units]
    t0 = time.perf_counter()
    ours = elastic_net(P[tr], Q[tr][:, units], LinearSettings())
    t_ours = time.perf_counter() - t0
    Xt = torch.tensor(X, dtype=torch.float32)
    rows = []
    for j, u in enumerate(units):
        lin = torch.nn.Linear(X.shape[1], 1)
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
        loader = torch.utils.data.DataLoader(
            IndexedTensorDataset(Xt, torch.tensor(Y[:, [u]], dtype=torch.float32)), batch_size=256, shuffle=True)
        t0 = time.perf_counter()
        train_saga(lin, loader, lr, epochs, 0.05, 0.99, group=False, family="gaussian", verbose=None,
                   logger=lambda *a: None)
        dt = time.perf_counter() - t0
        w, b = lin.weight.detach().numpy()[0].astype(np.float64), float(lin.bias.detach())
        rows.append((dt, enet_objective(X, Y[:, u], w, b, 0.05, 0.99),
                     enet_objective(X, Y[:, u], ours[:, j], 0.0, 0.05, 0.99)))
    dts, ref_obj, our_obj = map(np.array, zip(*rows))
    print(f"glm-saga train_saga ({epochs} epochs max, lr {lr}, batch 256), {len(units)} units one at a time: "
          f"{dts.sum():.1f} s = {dts.mean():.2f} s per unit; ours (elastic_net, same units together): "
          f"{t_ours:.2f} s = {1000 * t_ours / len(units):.1f} ms per unit ({dts.mean() / (t_ours / len(units)):.0f}x); "
          f"objective: ours lower or equal on {(our_obj <= ref_obj + 1e-9).sum()}/{len(units)}, median "
          f"excess of glm-saga's {np.median(ref_obj - our_obj):.2e}")


def digest(exps, keep, W) -> str:
    """SHA-256 of every explanation (concepts, weights, bias, correlations, dead), the kept
    concepts and the elastic-net weights, to the bit."""
    h = hashlib.sha256(np.packbits(keep).tobytes() + np.ascontiguousarray(W, np.float64).tobytes())
    for e in exps:
        h.update(np.array([len(e.concepts), *e.concepts], np.int64).tobytes())
        h.update(np.array([*e.weights, e.bias, e.train_corr, e.val_corr, e.dead], np.float64).tobytes())
    return h.hexdigest()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--concepts", type=int, default=800)
    ap.add_argument("--units", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--digest", action="store_true", help="print a SHA-256 of the output, to compare code versions")
    ap.add_argument("--glm-saga", type=int, default=0, metavar="N",
                    help="also run glm-saga (benchmarks/out/glm) on the first N units, one at a time")
    ap.add_argument("--glm-epochs", type=int, default=500)
    args = ap.parse_args()
    import threadpoolctl
    threadpoolctl.threadpool_limits(args.threads)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    P, Q, planted = make_data(rng, args.images, args.concepts, args.units)
    masks = split_masks(make_splits(np.arange(args.images), seed=args.seed), np.arange(args.images))
    print(f"data: P {P.shape} float32 ({P.nbytes / 2**20:.0f} MB), Q {Q.shape}, "
          f"{int(masks['train'].sum())} train images; generated in {time.perf_counter() - t0:.1f} s; "
          f"RSS peak so far {peak_rss_mb():.0f} MB", flush=True)
    t0 = time.perf_counter()
    exps, keep, W = explain_units(P, Q, masks, LinearSettings())
    dt = time.perf_counter() - t0
    live = [e for e in exps if not e.dead]
    found = [planted[k] <= set(e.concepts) for k, e in enumerate(exps) if not e.dead]
    exact = [planted[k] == set(e.concepts) for k, e in enumerate(exps) if not e.dead]
    print(f"explain_units: {dt:.2f} s for {args.units} units = {1000 * dt / args.units:.2f} ms per unit "
          f"({args.threads} threads); concepts kept {int(keep.sum())}/{args.concepts}; "
          f"dead {sum(e.dead for e in exps)}")
    print(f"mean length {np.mean([len(e.concepts) for e in live]):.2f}, mean val corr "
          f"{np.mean([e.val_corr for e in live]):.3f}; planted concepts all found in {np.mean(found):.1%} "
          f"of live units, exactly in {np.mean(exact):.1%}")
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    if args.digest:
        print(f"output digest {digest(exps, keep, W)}")
    if args.glm_saga:
        glm_saga_side_by_side(P, Q, masks, args.glm_saga, args.glm_epochs, lr=0.1)


if __name__ == "__main__":
    main()
