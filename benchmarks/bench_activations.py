"""How much does extraction cost on top of the bare forward pass?

On the same pre-built batches (no PNG decoding), for each ResNet-18 layer:
  - bare forward, full network
  - bare forward stopped at the layer (the least any extraction must do)
  - our extraction: hook + summary and maps Parquet, written as the batches come
and the ratio extraction / bare (target >= 0.9 of the stopped forward); the stopped
forward and the extraction of a layer run in turn, --repeats times: the ratio of their
best times, and the median of the ratios of each pair. The extraction keeps the memory that
tensors free (`nexplain.compute.keep_freed_memory`, process-wide), so every forward here
runs so too (`--default-malloc`: not the bare ones before the first extraction).

    python benchmarks/bench_activations.py [--images 512] [--size 112] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from nexplain.activations.activations import extract_batches
from nexplain.activations.hooks import Trace
from nexplain.compute import keep_freed_memory


def best_of(repeats, fn) -> float:
    """Fastest of a few runs: the least noisy estimate on a shared machine."""
    return min(best_of_each(repeats, fn)[0])


def best_of_each(repeats, *fns, between=None) -> list[list[float]]:
    """Each of `fns` timed `repeats` times, in turn (a, b, a, b, ...), so that a slow spell
    of a shared machine falls on both sides of a ratio; `between()` runs untimed after each."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
            if between:
                between()
    return times


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
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave the allocator as it is until the first extraction changes it")
    args = ap.parse_args()
    if not args.default_malloc:
        keep_freed_memory()

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
          f"{args.threads} threads, {'channels_last' if args.channels_last else 'NCHW'}, "
          f"{'default malloc' if args.default_malloc else 'freed memory kept'} (best of {args.repeats})")
    print(f"full forward: {n / full:7.1f} img/s")
    print(f"{'layer':8} {'stopped fwd':>12} {'extraction':>11} {'extr/stopped':>13} {'median pair':>11} "
          f"{'extr/full':>10} {'maps MB':>8}")
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        for layer in args.layers:
            written = []

            def extract_fresh():  # into new files, as a job does (replacing old ones costs their unlink)
                r = len(written)
                written.append(Path(tmp, f"{layer}_{r}_m.parquet"))
                extract_batches(model, layer, batches, n, Path(tmp, f"{layer}_{r}_s.parquet"), written[-1],
                                metadata={"model": "bench"})

            def drop_older():  # so that the kernel's writeback of earlier files doesn't slow later timings
                for path in written[:-1]:
                    path.unlink(missing_ok=True)
                    path.with_name(path.name.replace("_m.", "_s.")).unlink(missing_ok=True)

            stopped, extract = best_of_each(args.repeats, lambda: forward(layer), extract_fresh,
                                            between=drop_older)
            pairs = statistics.median(s / e for s, e in zip(stopped, extract))
            stopped, extract = min(stopped), min(extract)
            print(f"{layer:8} {n / stopped:8.1f} img/s {n / extract:7.1f} img/s "
                  f"{stopped / extract:13.2f} {pairs:11.2f} {full / extract:10.2f} "
                  f"{written[-1].stat().st_size / 1e6:8.1f}")


if __name__ == "__main__":
    main()
