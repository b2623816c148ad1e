"""PURE relevance throughput against the bare forward + backward pass of the same model, and
where the `relevance` job's time goes.

Usage: python benchmarks/bench_relevance.py [--pairs 1024] [--batch 32] [--layer layer4]
           [--earlier layer1 layer2 layer3] [--workdir .]
       python benchmarks/bench_relevance.py --job [--top 20] [--pairs N] [--workdir .]

Needs the default run in --workdir (results/models/resnet18_world, the world and layer maps).

Default: both arms run on the same batches of (unit, image) pairs, taken as the relevance rule takes
them (each unit's top-50 images by max spatial activation), with the images decoded beforehand (not
timed):
- bare: `model(x)` to the end, then `loss.backward()` of the summed logits (what a training step
  costs, no hooks, no relevance);
- ours: `nexplain.pure.relevance.pair_relevances` (hooks on the earlier layers and the unit layer,
  forward stopped at the unit layer, one `autograd.grad` to every earlier layer, the products,
  sums and L1 normalisation).
Throughput in (unit, image) pairs per second, best of 3 passes; then the projected time for all
512 units x 50 images of layer4. Target: ours >= 50% of bare.

--job: the steps of scripts/relevance.py for every unit (the package functions it calls, in its
order), each timed (wall and CPU seconds of this process): imports, top images, model, image
decoding, the pass (`relevances`; --pairs runs only the first N pairs of it and repeats their
values to the full table), the table, its write to a temporary file, and the content hashes the
job record takes of its inputs and output. Not timed here: the interpreter's start and MLflow's
run (import, open, log), a few seconds.
"""

from __future__ import annotations

import time

START = time.perf_counter(), time.process_time()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from nexplain.activations.read import read_peaks  # noqa: E402
from nexplain.data.folder import open_dataset  # noqa: E402
from nexplain.hashing import content_hash  # noqa: E402
from nexplain.models.load import load_model  # noqa: E402
from nexplain.models.manifest import read_manifest  # noqa: E402
from nexplain.pure.relevance import image_loader, pair_relevances, relevance_table, relevances, top_pairs  # noqa: E402
from nexplain.tables import write_table  # noqa: E402

IMPORTED = time.perf_counter(), time.process_time()
MODEL = "resnet18_world"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=None, help="pairs timed (default 1024; --job: all)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--layer", default="layer4")
    ap.add_argument("--earlier", nargs="+", default=["layer1", "layer2", "layer3"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--job", action="store_true", help="time the relevance job's steps")
    ap.add_argument("--top", type=int, default=20, help="--job: top images per unit (pure.top)")
    ap.add_argument("--workdir", type=Path, default=REPO, help="where results/ of the default run is")
    args = ap.parse_args()
    os.chdir(args.workdir)  # the manifest names the weights relative to the workdir
    torch.set_num_threads(args.threads)
    (job if args.job else throughput)(args)


def throughput(args) -> None:
    ids, peak = read_peaks(f"results/{MODEL}/world/{args.layer}/activations/maps.parquet")
    pairs = top_pairs(ids, peak, np.arange(peak.shape[1]), 50)[:args.pairs or 1024]
    loaded = load_model(read_manifest(f"results/models/{MODEL}/model.json")["spec"])
    load = image_loader(open_dataset("broden", "results/datasets/world"), loaded.transform, pairs[:, 1])
    batches = [(load(pairs[s:s + args.batch, 1]), torch.as_tensor(pairs[s:s + args.batch, 0]))
               for s in range(0, len(pairs), args.batch)]
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


def job(args) -> None:
    steps = [("imports (torch, torchvision, nexplain)", IMPORTED[0] - START[0], IMPORTED[1] - START[1])]
    clock = [time.perf_counter(), time.process_time()]

    def step(name):
        now = time.perf_counter(), time.process_time()
        steps.append((name, now[0] - clock[0], now[1] - clock[1]))
        clock[:] = now

    maps = f"results/{MODEL}/world/{args.layer}/activations/maps.parquet"
    ids, peak = read_peaks(maps)
    pairs = top_pairs(ids, peak, np.arange(peak.shape[1]), args.top)
    step(f"top images: {len(pairs)} pairs")
    loaded = load_model(read_manifest(f"results/models/{MODEL}/model.json")["spec"])
    step("load model")
    load = image_loader(open_dataset("broden", "results/datasets/world"), loaded.transform, pairs[:, 1])
    step(f"decode {len(np.unique(pairs[:, 1]))} images")
    n = min(args.pairs or len(pairs), len(pairs))
    rel = relevances(loaded.module, load, pairs[:n], args.layer, args.earlier, args.batch, progress=False)
    step(f"PASS: relevances of {n} pairs")
    rel = {k: np.resize(v, (len(pairs), v.shape[1])) for k, v in rel.items()}  # a part pass: full-size table
    table = relevance_table(pairs, rel, args.earlier)
    step("table")
    with tempfile.TemporaryDirectory() as tmp:
        write_table(table, Path(tmp) / "relevance.parquet", {"top": args.top})
        step("write")
        for path in (f"results/models/{MODEL}/checkpoint.pt", f"results/models/{MODEL}/metrics.json", maps,
                     f"results/models/{MODEL}/model.json", "results/datasets/world", Path(tmp) / "relevance.parquet"):
            content_hash(path)
        step("content hashes (job record)")
    outside = [s for s in steps if not s[0].startswith("PASS")]
    for name, wall, cpu in steps + [("outside the pass", sum(s[1] for s in outside), sum(s[2] for s in outside)),
                                    ("total", sum(s[1] for s in steps), sum(s[2] for s in steps))]:
        print(f"{name:40s} {wall:7.2f} s wall {cpu:7.2f} s cpu")


if __name__ == "__main__":
    main()
