"""How much does extraction cost on top of the bare forward pass?

On the same pre-built batches (no PNG decoding), for each ResNet-18 layer:
  - bare forward, full network
  - bare forward stopped at the layer (the least any extraction must do)
  - our extraction: hook + summary Parquet + spill + maps Parquet
and the ratio extraction / bare (target >= 0.9 of the stopped forward).

    python benchmarks/bench_activations.py [--images 512] [--size 112] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from nexplain.activations.activations import extract_batches
from nexplain.activations.hooks import Trace


def best_of(repeats, fn) -> float:
    """Fastest of a few runs: the least noisy estimate on a shared machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--nchw", dest="channels_last", action="store_false",
                    help="keep the default NCHW memory format instead of channels_last")
    ap.add_argument("--layers", nargs="+", default=["layer1", "layer2", "layer3", "layer4"])
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(args.images, 3, args.size, args.size)
    if args.channels_last:  # as extract_activations runs it; applies to bare and ours alike
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    batches = [(x[i:i + args.batch_size], torch.arange(i, min(i + args.batch_size, args.images)))
               for i in range(0, args.images, args.batch_size)]

    def forward(layer=None):
        with torch.inference_mode():
            for images, _ in batches:
                if layer is None:
                    model(images)
                else:
                    with Trace(model, layer, stop=True):
                        model(images)

    forward()  # warm up the allocator and kernels
    full = best_of(args.repeats, forward)
    n = args.images
    print(f"ResNet-18 random init, {n} images at {args.size}px, batch {args.batch_size}, "
          f"{args.threads} threads, {'channels_last' if args.channels_last else 'NCHW'} "
          f"(best of {args.repeats})")
    print(f"full forward: {n / full:7.1f} img/s")
    print(f"{'layer':8} {'stopped fwd':>12} {'extraction':>11} {'extr/stopped':>13} {'extr/full':>10} "
          f"{'maps MB':>8}")
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        for layer in args.layers:
            stopped = best_of(args.repeats, lambda: forward(layer))
            summary, maps = Path(tmp, f"{layer}_s.parquet"), Path(tmp, f"{layer}_m.parquet")
            extract = best_of(args.repeats, lambda: extract_batches(
                model, layer, batches, n, summary, maps, metadata={"model": "bench"}))
            print(f"{layer:8} {n / stopped:8.1f} img/s {n / extract:7.1f} img/s "
                  f"{stopped / extract:13.2f} {full / extract:10.2f} {maps.stat().st_size / 1e6:8.1f}")


if __name__ == "__main__":
    main()
