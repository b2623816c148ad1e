"""Ablation scoring and Top Impact on the default model, against one forward pass over test.

Usage: python benchmarks/bench_ablation.py [--threads 2] [--results results]

Needs the default pipeline's outputs (model, activations, splits). Times, on the world's
test split (600 images) unless said otherwise:
- one forward pass of the model over the test images (decoding and transforms included,
  as the activation rule runs it), and the same from pre-decoded tensors;
- layer4 (linear tail, rank-one logits): ablation scores of all 512 units ("norm"), the
  "optim" fit of (c, d) for all 512 units on val (100 Adam steps), and Top Impact of all
  512 units over all 3,000 images;
- layer3 (tail replayed with torch.fx): the same per (unit, input) pair, projected to the
  full layer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from nexplain.activations.read import read_all_maps, read_summary  # noqa: E402
from nexplain.data.folder import open_dataset  # noqa: E402
from nexplain.data.images import ImageDataset  # noqa: E402
from nexplain.linear.ablation import Ablation  # noqa: E402
from nexplain.linear.impact import impacts  # noqa: E402
from nexplain.linear.tail import Tail  # noqa: E402
from nexplain.models.load import load_model  # noqa: E402
from nexplain.models.manifest import read_manifest  # noqa: E402
from nexplain.splits import split_masks  # noqa: E402


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=str(REPO / "results"))
    ap.add_argument("--replay-units", type=int, default=8, help="layer3 units timed (projected to 256)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = Path(args.results)
    loaded = load_model(read_manifest(res / "models/resnet18_world/model.json")["spec"])
    model = loaded.module
    table = open_dataset("broden", res / "datasets/world")
    base = res / "resnet18_world/world"
    ids, Q4, _ = read_summary(base / "layer4/activations/summary.parquet")
    masks = split_masks(pd.read_parquet(res / "world/splits.parquet"), ids)
    te, va = masks["test"], masks["val"]
    labels = np.asarray(table.labels)[ids]

    # one forward pass over the test split
    loader = torch.utils.data.DataLoader(ImageDataset(table, loaded.transform, ids[te]), batch_size=64)
    with torch.no_grad():
        t0 = time.perf_counter()
        xs = [x for x, _ in loader]
        t_decode = time.perf_counter() - t0
        _, t_fwd = timed(lambda: [model(x) for x in xs])
    t_forward = t_decode + t_fwd
    print(f"one forward pass over test ({te.sum()} images): {t_forward:.2f} s "
          f"({t_decode:.2f} s decoding + transforms, {t_fwd:.2f} s model)")

    tail4 = Tail(model, "layer4")
    ab_te, t_setup = timed(Ablation, tail4, Q4[te], labels[te])
    ab_va = Ablation(tail4, Q4[va], labels[va])
    rng = np.random.default_rng(0)
    units = np.arange(Q4.shape[1])
    V = Q4[te] + rng.normal(0, 0.1, Q4[te].shape)
    mean = np.broadcast_to(Q4[te].mean(0), V.shape).copy()
    _, t_score = timed(ab_te.score, units, V, mean)
    S = Q4[va] + rng.normal(0, 0.1, Q4[va].shape)
    _, t_optim = timed(ab_va.optim_scaling, units, S)
    ab_all = Ablation(tail4, Q4, labels)
    _, t_ti = timed(impacts, ab_all)
    print(f"layer4 (linear tail): ablation scores, 512 units x {te.sum()} test images: {t_score:.2f} s "
          f"({t_score / t_forward:.2f}x one forward pass over test); optim fit of (c, d), 512 units, "
          f"100 steps on val: {t_optim:.2f} s; Top Impact, 512 units x 3,000 images: {t_ti:.2f} s "
          f"({t_ti / t_forward:.2f}x)")

    ids3, maps3 = read_all_maps(base / "layer3/activations/maps.parquet", ids[te])
    tail3 = Tail(model, "layer3")
    ab3 = Ablation(tail3, maps3, labels[te])
    u3 = np.arange(args.replay_units)
    q3 = maps3.mean(axis=(2, 3))
    V3 = q3[:, u3] + rng.normal(0, 0.1, (len(q3), len(u3)))
    mean3 = np.broadcast_to(q3[:, u3].mean(0), V3.shape).copy()
    _, t3 = timed(ab3.score, u3, V3, mean3)
    per_pair = t3 / (2 * len(u3) * len(q3))
    full = per_pair * 2 * 256 * len(q3)
    print(f"layer3 (tail replayed): {1000 * per_pair:.3f} ms per (unit, input) pair; ablation scores of "
          f"{len(u3)} units x {len(q3)} test images: {t3:.1f} s; projected for all 256 units: {full:.0f} s "
          f"({full / t_forward:.0f}x one forward pass over test); Top Impact for 256 units x 3,000 "
          f"images: {per_pair * 256 * 3000:.0f} s")


if __name__ == "__main__":
    main()
