"""Linear Explanations at the issue's sizes: seconds per unit, peak memory, planted recovery.

Usage: python benchmarks/bench_linear.py [--images 5000] [--concepts 800] [--units 512]
           [--threads 2] [--seed 0]

Synthetic data like a probe set: P (N x C) mixes sparse binary labels and smooth VLM-like
scores in [0, 1]; every unit is a non-negative combination of 1-6 concepts plus noise,
some plus a ReLU, a few constant (dead). The split is 70/10/20, so --images 5000 gives the
issue's 3,500 train images. Timed: `nexplain.linear.explain_units` (filter, moments,
elastic net for all units, greedy search), end to end, amortised per unit; peak RSS from
/proc. Reported besides: how often the greedy search finds the planted concepts.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from nexplain.linear import LinearSettings, explain_units  # noqa: E402
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--concepts", type=int, default=800)
    ap.add_argument("--units", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
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


if __name__ == "__main__":
    main()
