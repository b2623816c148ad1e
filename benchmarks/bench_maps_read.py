"""What does reading a maps table cost, at Broden size?

Writes the maps of `--images` images x `--units` units of h x w through the real
extraction (`extract_batches` on an identity module, so no forward pass), then times what
the jobs read: one unit's maps (`read_unit_maps`, each explain job), every unit's peak
(`read_peaks`, PURE), and every map of 1,000 images (`read_all_maps`, the ablations).
Runs against any version of the package on PYTHONPATH, to compare table layouts.

    python benchmarks/bench_maps_read.py [--images 63305] [--units 512] [--size 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nexplain.activations.activations import extract_batches
from nexplain.activations.read import read_all_maps, read_peaks, read_unit_maps


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=63305)
    ap.add_argument("--units", type=int, default=512)
    ap.add_argument("--size", type=int, default=4, help="maps are size x size")
    ap.add_argument("--batch-size", type=int, default=512)
    args = ap.parse_args()

    n, u, s = args.images, args.units, args.size
    module = torch.nn.Sequential(torch.nn.Identity())  # the layer "0" outputs its input
    block = torch.rand(args.batch_size, u, s, s, generator=torch.Generator().manual_seed(0))
    batches = ((block[:min(args.batch_size, n - i)], torch.arange(i, min(i + args.batch_size, n)))
               for i in range(0, n, args.batch_size))
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        maps = Path(tmp, "maps.parquet")
        write, _ = timed(extract_batches, module, "0", batches, n, Path(tmp, "summary.parquet"), maps)
        print(f"{n} images x {u} units of {s}x{s}: maps {maps.stat().st_size / 1e9:.2f} GB written in "
              f"{write:.1f} s (with the summary)")
        for unit in (0, u // 2, u - 1, 7):
            t, (ids, m) = timed(read_unit_maps, maps, unit)
            assert m.shape == (n, s, s)
            print(f"read_unit_maps unit {unit:4d}: {t * 1e3:7.1f} ms")
        t, (ids, peaks) = timed(read_peaks, maps)
        print(f"read_peaks (all {n} x {u}): {t:.2f} s")
        some = np.arange(0, n, max(1, n // 1000))[:1000]
        t, (ids, m) = timed(read_all_maps, maps, some)
        print(f"read_all_maps of {len(some)} images spread over the table: {t:.2f} s")


if __name__ == "__main__":
    main()
