"""PURE relevance throughput against the bare forward + backward pass of the same model.

Usage: python benchmarks/bench_relevance.py [--pairs 1024] [--batch 32] [--layer layer4]
           [--earlier layer1 layer2 layer3] [--units all]

Needs the default run (results/models/resnet18_world, the world and layer maps). Both arms run
on the same batches of (unit, image) pairs, taken as the relevance rule takes them (each unit's
top-50 images by max spatial activation), with the images decoded beforehand (not timed):
- bare: `model(x)` to the end, then `loss.backward()` of the summed logits (what a training step
  costs, no hooks, no relevance);
- ours: `nexplain.pure.relevance.pair_relevances` (hooks on the earlier layers and the unit layer,
  forward stopped at the unit layer, one `autograd.grad` to every earlier layer, the products,
  sums and L1 normalisation).
Throughput in (unit, image) pairs per second, best of 3 passes; then the projected time for all
512 units x 50 images of layer4. Target: ours >= 50% of bare.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from nexplain.activations.read import read_all_maps  # noqa: E402
from nexplain.data.folder import open_dataset  # noqa: E402
from nexplain.data.images import load_image  # noqa: E402
from nexplain.models.load import load_model  # noqa: E402
from nexplain.models.manifest import read_manifest  # noqa: E402
from nexplain.pure.relevance import pair_relevances, top_images  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--layer", default="layer4")
    ap.add_argument("--earlier", nargs="+", default=["layer1", "layer2", "layer3"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = REPO / "results"
    ids, maps = read_all_maps(res / f"resnet18_world/world/{args.layer}/activations/maps.parquet")
    top = top_images(ids, maps.reshape(*maps.shape[:2], -1).max(2), 50)
    del maps
    pairs = np.array([(u, i) for u, row in enumerate(top) for i in row], np.int64)[:args.pairs]
    loaded = load_model(read_manifest(res / "models/resnet18_world/model.json")["spec"])
    table = open_dataset("broden", res / "datasets/world")
    cache = {int(i): loaded.transform(load_image(table.paths[int(i)])) for i in np.unique(pairs[:, 1])}
    batches = [(torch.stack([cache[int(i)] for i in pairs[s:s + args.batch, 1]]),
                torch.as_tensor(pairs[s:s + args.batch, 0])) for s in range(0, len(pairs), args.batch)]
    model = loaded.module.eval()

    def bare():
        for x, _ in batches:
            model.zero_grad(set_to_none=True)
            model(x.requires_grad_(False)).sum().backward()

    def ours():
        for x, u in batches:
            pair_relevances(model, x, u, args.layer, args.earlier)

    times = {}
    for name, fn in (("bare", bare), ("ours", ours), ("bare", bare), ("ours", ours), ("bare", bare), ("ours", ours)):
        t0 = time.perf_counter()
        fn()
        times.setdefault(name, []).append(time.perf_counter() - t0)
    n = len(pairs)
    tb, to = min(times["bare"]), min(times["ours"])
    print(f"{n} pairs ({len(np.unique(pairs[:, 0]))} units x top-50 images), batch {args.batch}, "
          f"{args.threads} threads, ResNet-18 112 px, relevance of {args.earlier} for {args.layer} units")
    print(f"bare forward + backward: {n / tb:.1f} pairs/s ({tb:.2f} s)")
    print(f"ours (relevance):        {n / to:.1f} pairs/s ({to:.2f} s) = {tb / to:.0%} of bare (target >= 50%)")
    print(f"projection, all 512 units x 50 images of {args.layer}: {512 * 50 / (n / to):.0f} s")


if __name__ == "__main__":
    main()
