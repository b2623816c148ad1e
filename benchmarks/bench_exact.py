"""Exact search vs the authors' optimal search: the same optimum, and how much faster.

Usage: python benchmarks/bench_exact.py [--images 1000] [--concepts 100] [--size 32]
           [--planted 8] [--correlated 8] [--random 6] [--length 3] [--seed 0] [--json PATH]

Data and units: bench_coex.py's synthetic Broden-like concepts and units (planted
formulas, correlated maps, random fields). Per unit:
- ours, `exact_search` alone (no incumbent), and the pipeline's way: `mmesh_search`
  (beam 5) then `exact_search` started from the beam's best; the beam-vs-optimum gap;
- the reference, `optimal.compute_optimal_explanations` of `compositional-explanations`
  0.0.3.4 (installed as bench_coex.py says), on the same masks and bitmap.
Optima compared by IoU (to 1e-12) and by canonical key. One-time dataset work is timed
apart: our atoms, the reference's dataset info (its on-disk cache) and disjoint matrix.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_coex import REPO, load_reference, make_concepts, make_units, ref_to_ours  # noqa: E402

from nexplain.compositional.atoms import Atoms  # noqa: E402
from nexplain.compositional.exact import exact_search  # noqa: E402
from nexplain.compositional.formulas import to_str  # noqa: E402
from nexplain.compositional.masks import Bitmap, ConceptStore  # noqa: E402
from nexplain.compositional.search import SearchCache, mmesh_search  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--concepts", type=int, default=100)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--planted", type=int, default=8)
    ap.add_argument("--correlated", type=int, default=8)
    ap.add_argument("--random", type=int, default=6)
    ap.add_argument("--length", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the per-unit rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    masks, level, _, kinds, _ = make_concepts(args.images, args.size, args.concepts, rng)
    units = make_units(masks, kinds, args, rng)
    c_total, n, h, w = masks.shape
    print(f"data: {n} images {h}x{w}, {c_total} concepts, {len(units)} units, length {args.length}")

    t0 = time.perf_counter()
    store = ConceptStore.from_dense(masks, level)
    t_store = time.perf_counter() - t0
    t0 = time.perf_counter()
    atoms = Atoms.from_store(store)
    t_atoms = time.perf_counter() - t0
    print(f"ours, once per dataset: store {t_store:.2f} s, atoms {t_atoms:.2f} s ({atoms.n_atoms} atoms)")

    ref_beam, ref_f, ref_metrics = load_reference()
    from compositional_explanations import optimal
    flat = torch.from_numpy(masks.reshape(c_total, n, h * w))
    ref_masks = [flat[c] for c in range(c_total)]
    t0 = time.perf_counter()
    fl = flat.reshape(c_total, -1).float()
    disjoint = (fl @ fl.T) == 0
    del fl
    cache_dir = REPO / "benchmarks" / "out" / f"ce_cache_{args.seed}_{n}_{c_total}_{h}"

    def reference(dense):
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a progress line per node
            return optimal.compute_optimal_explanations(
                masks=ref_masks, bitmaps=torch.from_numpy(dense.reshape(n, -1)), disjoint_info=disjoint,
                length=args.length, device="cpu", cache_dir=str(cache_dir))

    reference(units[0][2])  # fills its dataset-info cache (and warms torch)
    print(f"reference, once per dataset: disjoint matrix + dataset info + first unit "
          f"{time.perf_counter() - t0:.2f} s")

    rows = []
    for u, (kind, desc, dense) in enumerate(units):
        A = Bitmap.from_dense(dense)
        t0 = time.perf_counter()
        alone = exact_search(A, store, args.length, atoms=atoms)
        t_alone = time.perf_counter() - t0
        t0 = time.perf_counter()
        beam = mmesh_search(A, store, args.length, 5, cache=SearchCache())
        t_beam = time.perf_counter() - t0
        t0 = time.perf_counter()
        ex = exact_search(A, store, args.length, incumbent=beam.beam[0] if beam.beam else None, atoms=atoms)
        t_after = time.perf_counter() - t0
        t0 = time.perf_counter()
        best = reference(dense)
        t_ref = time.perf_counter() - t0
        bm = torch.from_numpy(dense.reshape(n, -1))
        ref_iou = 0.0 if best is None else float(
            ref_metrics.compute_iou_from_masks(formula=best, masks=ref_masks, bitmaps=bm))
        ref_formula = None if best is None else ref_to_ours(best, ref_f)
        row = dict(unit=u, kind=kind, desc=desc, cells=int(dense.sum()),
                   exact=to_str(alone.formula), exact_iou=alone.iou, beam=to_str(beam.formula), beam_iou=beam.iou,
                   gap=alone.iou - beam.iou, ref=str(best), ref_iou=ref_iou,
                   same_iou=abs(ref_iou - alone.iou) <= 1e-12, same_key=ref_formula == alone.formula,
                   started_same=ex.formula == alone.formula and ex.iou == alone.iou,
                   t_exact=t_alone, t_beam=t_beam, t_beam_exact=t_beam + t_after, t_ref=t_ref,
                   expanded=alone.proof.expanded, prefixes=alone.proof.prefixes,
                   expanded_started=ex.proof.expanded, max_pruned=alone.proof.max_pruned)
        rows.append(row)
        print(f"[{u:2d}] {kind:10s} cells {row['cells']:6d} exact {row['exact']:22s} {alone.iou:.6f} "
              f"(beam {beam.iou:.6f} gap {row['gap']:.4f}) ref {ref_iou:.6f} "
              f"{'SAME' if row['same_iou'] else 'DIFFERENT'}{'' if row['same_key'] else ' (other formula)'} | "
              f"exact {t_alone:.3f}s, beam+exact {row['t_beam_exact']:.3f}s, ref {t_ref:.2f}s "
              f"({t_ref / t_alone:.0f}x) | expanded {alone.proof.expanded}/{alone.proof.prefixes} prefixes, "
              f"{ex.proof.expanded} from the beam", flush=True)

    med = statistics.median
    ratio = [r["t_ref"] / r["t_exact"] for r in rows]
    print("\n## Summary")
    print(f"same optimum IoU on {sum(r['same_iou'] for r in rows)}/{len(rows)} units, same formula (canonical key) "
          f"on {sum(r['same_key'] for r in rows)}; started from the beam: same result on "
          f"{sum(r['started_same'] for r in rows)}/{len(rows)}")
    print(f"beam below the optimum on {sum(r['gap'] > 0 for r in rows)}/{len(rows)} units; largest gap "
          f"{max(r['gap'] for r in rows):.4f}")
    print("| | median s/unit | total s |")
    print("|---|---|---|")
    for key, name in (("t_exact", "ours, exact_search"), ("t_beam_exact", "ours, mmesh then exact"),
                      ("t_beam", "ours, mmesh alone"), ("t_ref", "reference optimal search")):
        print(f"| {name} | {med([r[key] for r in rows]):.4f} | {sum(r[key] for r in rows):.2f} |")
    print(f"speed, reference / exact_search: per unit median {med(ratio):.0f}x, min {min(ratio):.0f}x, "
          f"max {max(ratio):.0f}x; totals {sum(r['t_ref'] for r in rows) / sum(r['t_exact'] for r in rows):.0f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
