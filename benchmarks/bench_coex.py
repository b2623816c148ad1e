"""CoEx search vs the authors' package: same best formula and IoU, and how much faster.

Usage: python benchmarks/bench_coex.py [--images 1000] [--concepts 120] [--size 32]
           [--planted 8] [--correlated 8] [--random 6] [--seed 0] [--threads 1]
           [--check-bounds 6] [--no-reference]

Per unit: our `beam_search` (exhaustive) and `mmesh_search`, then the reference; best
formula compared by canonical key, IoU to 1e-9, a tie being a runner-up within 1e-12 in
our exhaustive beam (kept whole, `final_beam=beam`). Diagnostics (private API, see
`ours_rounds`): evaluations per round, with the whole final beam kept and with the default
last round of 1 (like the reference). `--check-bounds N`: both estimates against the exact IoU of every
first-round candidate of the reference on the first N units.

Reference: `compositional-explanations` 0.0.3.4 from PyPI (La Rosa's package), installed
for the benchmark only:
    .venv/bin/pip install --no-deps --target benchmarks/out/ce compositional-explanations
Its `beam.compute_beam_explanations` is the beam search guided by the "optimal" heuristic
(per-image bounds from unique/common cells, `optimal_sample_heuristic`); it returns only
the best formula, so its exact-IoU count is taken by wrapping `beam.beam_search` (the
only place where it computes an exact IoU of a compound formula). Its search semantics:
start beam = 2 x beam_size single concepts, keep beam_size, expand only the formulas of
the last length in each round, and a final round with a beam of 1. Ours is run with
`start_beam = 2 * beam` so that both search the same space (see RESULTS.md).

Synthetic Broden-like data (seeded): exclusive "object" concepts painted per image
(ellipses and rectangles, Zipf frequencies), "part" concepts inside their parent object,
overlapping "material" and "color" blobs, image-level "scene" (exactly one per image) and
"texture" labels. Units:
- planted: A = a known formula's mask, 5% of its cells dropped, random rectangles added;
- correlated: 8x8 activation maps = pooled masks of 1-2 concepts + smooth noise, ReLU,
  cells over the 0.995 quantile after bilinear upsampling (`top_bitmap`, as the pipeline);
- random: smooth random fields, ReLU, same thresholding.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as tnf

REPO = Path(__file__).resolve().parents[1]
REF_DIR = REPO / "benchmarks" / "out" / "ce"
sys.path.insert(0, str(REPO / "src"))

from nexplain.compositional import bitmaps as nbm  # noqa: E402
from nexplain.compositional import search as nsearch  # noqa: E402
from nexplain.compositional.formulas import AND, AND_NOT, OR, Formula, leaf, to_str  # noqa: E402
from nexplain.compositional.masks import Bitmap, ConceptStore  # noqa: E402
from nexplain.compositional.search import SearchCache, beam_search, mmesh_search  # noqa: E402

TIE = 1e-12


# --------------------------------------------------------------------------- data

def _ellipse(h, w, rng):
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(2, h / 2.5), rng.uniform(2, w / 2.5)
    y, x = np.ogrid[:h, :w]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def _rect(h, w, rng, lo=3):
    hh, ww = rng.integers(lo, h // 2 + 2), rng.integers(lo, w // 2 + 2)
    r0, c0 = rng.integers(0, h - hh + 1), rng.integers(0, w - ww + 1)
    m = np.zeros((h, w), bool)
    m[r0:r0 + hh, c0:c0 + ww] = True
    return m


def _tiny(h, w, rng):
    """A 2..5 px square."""
    k = int(rng.integers(2, 6))
    r0, c0 = rng.integers(0, h - k + 1), rng.integers(0, w - k + 1)
    m = np.zeros((h, w), bool)
    m[r0:r0 + k, c0:c0 + k] = True
    return m


def _shape(h, w, rng):
    return _ellipse(h, w, rng) if rng.random() < 0.6 else _rect(h, w, rng)


def make_concepts(n, size, n_concepts, rng):
    """(masks (C,N,H,W) bool, image_level (C,N) bool, names, kinds, parent of parts)."""
    h = w = size
    n_scene, n_texture = 8, 3
    rest = n_concepts - n_scene - n_texture
    n_obj = int(rest * 0.5)
    n_part = int(rest * 0.17)
    n_mat = int(rest * 0.2)
    n_col = rest - n_obj - n_part - n_mat
    kinds = ["object"] * n_obj + ["part"] * n_part + ["material"] * n_mat + ["color"] * n_col \
        + ["scene"] * n_scene + ["texture"] * n_texture
    c_total = len(kinds)
    masks = np.zeros((c_total, n, h, w), bool)
    level = np.zeros((c_total, n), bool)
    obj_w = 1.0 / np.arange(1, n_obj + 1) ** 0.9
    obj_w /= obj_w.sum()
    parent = {n_obj + i: int(rng.integers(0, min(n_obj, 12))) for i in range(n_part)}
    mat0, col0 = n_obj + n_part, n_obj + n_part + n_mat
    mat_p = np.exp(rng.uniform(np.log(0.01), np.log(0.25), n_mat))
    col_p = np.exp(rng.uniform(np.log(0.05), np.log(0.4), n_col))
    scene0, tex0 = col0 + n_col, col0 + n_col + n_scene
    scene_w = 1.0 / np.arange(1, n_scene + 1)
    scene_w /= scene_w.sum()
    for i in range(n):
        label = np.full((h, w), -1)
        k = int(rng.integers(2, 7))
        objs = rng.choice(n_obj, size=k, replace=False, p=obj_w)
        for j, o in enumerate(objs):  # painter's algorithm: objects never overlap
            m = np.ones((h, w), bool) if j == 0 and rng.random() < 0.3 else _shape(h, w, rng)
            label[m] = o
        for o in np.unique(label[label >= 0]):
            masks[o, i] = label == o
        for p, o in parent.items():
            if masks[o, i].any() and rng.random() < 0.6:
                masks[p, i] = masks[o, i] & _shape(h, w, rng)
        for j in range(n_mat):
            if rng.random() < mat_p[j]:
                masks[mat0 + j, i] = _shape(h, w, rng)
        for j in range(n_col):
            if rng.random() < col_p[j]:
                masks[col0 + j, i] = _ellipse(h, w, rng) | _ellipse(h, w, rng)
        level[scene0 + rng.choice(n_scene, p=scene_w), i] = True
        for j in range(n_texture):
            level[tex0 + j, i] = rng.random() < 0.08
    masks[level] = True
    names = [f"{kd}{c}" for c, kd in enumerate(kinds)]
    return masks, level, names, kinds, parent


def _smooth_field(n, g, rng):
    """(n, g, g) smooth random field: 3x3 noise upsampled bilinearly."""
    x = torch.from_numpy(rng.standard_normal((n, 1, 3, 3)).astype(np.float32))
    return tnf.interpolate(x, size=(g, g), mode="bilinear", align_corners=False)[:, 0].numpy()


def _pool(masks, g):
    x = torch.from_numpy(masks.astype(np.float32))[:, None]
    return tnf.adaptive_avg_pool2d(x, g)[:, 0].numpy()


def make_units(masks, kinds, args, rng):
    """[(kind, description, dense A (N,H,W) bool)]."""
    c_total, n, h, w = masks.shape
    freq = masks.reshape(c_total, n, -1).any(2).mean(1)
    pix = [c for c in range(c_total) if kinds[c] not in ("scene", "texture") and 0.03 < freq[c] < 0.6]
    objs = [c for c in pix if kinds[c] == "object"]
    over = [c for c in pix if kinds[c] in ("material", "color", "part")]
    units = []
    # template -> pools for b and c ("obj": another object, "over": an overlapping concept)
    templates = [("a OR b", "obj", "any"), ("a AND NOT b", "over", "any"),
                 ("(a OR b) AND c", "obj", "over"), ("a AND b", "over", "any"),
                 ("(a AND NOT b) OR c", "over", "any"), ("(a OR b) OR c", "obj", "any"),
                 ("(a AND b) OR c", "over", "any"), ("(a OR b) AND NOT c", "obj", "over")]
    pools = {"obj": objs, "over": over, "any": pix}

    def pick(pool, exclude, near=None):
        cand = [x for x in pools[pool] if x not in exclude]
        if near is not None and pool == "over":  # an overlapping concept that really overlaps
            ov = masks[cand].reshape(len(cand), -1)[:, near.ravel()].sum(1)
            cand = [cand[i] for i in np.argsort(-ov)[:8]]
        return int(rng.choice(cand))

    for u in range(args.planted):
        t, pb, pc = templates[u % len(templates)]
        a = int(rng.choice(objs))
        b = pick(pb, {a}, masks[a])
        c = pick(pc, {a, b}, masks[a] | masks[b])
        m = {"a": masks[a], "b": masks[b], "c": masks[c]}
        dense = {
            "a OR b": lambda: m["a"] | m["b"],
            "a AND NOT b": lambda: m["a"] & ~m["b"],
            "(a OR b) AND c": lambda: (m["a"] | m["b"]) & m["c"],
            "a AND b": lambda: m["a"] & m["b"],
            "(a AND NOT b) OR c": lambda: (m["a"] & ~m["b"]) | m["c"],
            "(a OR b) OR c": lambda: m["a"] | m["b"] | m["c"],
            "(a AND b) OR c": lambda: (m["a"] & m["b"]) | m["c"],
            "(a OR b) AND NOT c": lambda: (m["a"] | m["b"]) & ~m["c"],
        }[t]()
        # noise: drop 5% of the cells, add small rectangles worth about 5% of them elsewhere
        budget = 0.05 * dense.sum()
        dense &= rng.random(dense.shape) > 0.05
        while budget > 0:
            r = _tiny(h, w, rng)
            dense[rng.integers(n)] |= r
            budget -= r.sum()
        desc = t.replace("a", f"#{a}").replace("b", f"#{b}").replace("c", f"#{c}")
        units.append(("planted", desc, dense))
    g = 8
    for u in range(args.correlated):
        k = 1 + (u % 2)
        cs = [int(x) for x in rng.choice(pix, size=k, replace=False)]
        maps = 0.3 * _smooth_field(n, g, rng)
        for c in cs:
            maps = maps + rng.uniform(0.8, 1.5) * _pool(masks[c], g)
        maps = np.maximum(maps, 0).astype(np.float32)
        A, _ = nbm.top_bitmap(np.arange(n), maps, n, (h, w))
        units.append(("correlated", "+".join(f"#{c}" for c in cs), A.to_dense()))
    for u in range(args.random):
        maps = np.maximum(_smooth_field(n, g, rng), 0).astype(np.float32)
        A, _ = nbm.top_bitmap(np.arange(n), maps, n, (h, w))
        units.append(("random", "field", A.to_dense()))
    return [(k, d, a) for k, d, a in units if a.any()]


# --------------------------------------------------------------------------- reference

def load_reference():
    if not (REF_DIR / "compositional_explanations").is_dir():
        sys.exit(f"reference not installed: .venv/bin/pip install --no-deps --target {REF_DIR} "
                 "compositional-explanations")
    sys.path.insert(0, str(REF_DIR))
    from compositional_explanations import beam as ref_beam
    from compositional_explanations import formula as ref_f
    from compositional_explanations import metrics as ref_metrics
    return ref_beam, ref_f, ref_metrics


@contextmanager
def count_reference_visits(ref_beam, box):
    """Sum the exact IoU evaluations `beam.beam_search` reports (its third return value)."""
    inner = ref_beam.beam_search

    def counting(*a, **k):
        formulas, ious, visited = inner(*a, **k)
        box.append(visited)
        return formulas, ious, visited

    ref_beam.beam_search = counting
    try:
        yield
    finally:
        ref_beam.beam_search = inner


def ref_to_ours(f, ref_f) -> Formula:
    """The reference's left-deep tree (right = Leaf or Not(Leaf)) as our Formula."""
    if isinstance(f, ref_f.Leaf):
        return leaf(f.val)
    if isinstance(f, ref_f.Or):
        return ref_to_ours(f.left, ref_f).extend(OR, f.right.val)
    if isinstance(f, ref_f.And):
        if isinstance(f.right, ref_f.Not):
            return ref_to_ours(f.left, ref_f).extend(AND_NOT, f.right.val.val)
        return ref_to_ours(f.left, ref_f).extend(AND, f.right.val)
    raise TypeError(f"unexpected reference node {f!r}")


def ours_rounds(A, store, length, beam, start_beam, final_beam=1):
    """Diagnostic: our MMESH with exact evaluations counted per round (private API of
    nexplain.compositional.search: `_search`, `_mmesh_round`). `final_beam`: what the final round keeps
    (ours and the reference keep 1; `beam` keeps the whole beam, as before 2026-11-23)."""
    counts = []

    def round_fn(ctx, sel, entries):
        counts.append(nsearch._mmesh_round(ctx, sel, entries))
        return counts[-1]

    res = nsearch._search(A, store, length, beam, start_beam, None, SearchCache(), round_fn, final_beam)
    return res, counts


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--concepts", type=int, default=120)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--planted", type=int, default=8)
    ap.add_argument("--correlated", type=int, default=8)
    ap.add_argument("--random", type=int, default=6)
    ap.add_argument("--length", type=int, default=3)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the reference runs on torch)")
    ap.add_argument("--no-reference", action="store_true", help="ours only")
    ap.add_argument("--check-bounds", type=int, default=6, metavar="N",
                    help="on the first N units, compare both estimates with the exact IoU of every "
                         "first-round candidate")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    masks, level, names, kinds, _ = make_concepts(args.images, args.size, args.concepts, rng)
    units = make_units(masks, kinds, args, rng)
    c_total, n, h, w = masks.shape
    print(f"data: {n} images {h}x{w}, {c_total} concepts "
          f"({sum(k in ('scene', 'texture') for k in kinds)} image-level), {len(units)} units; "
          f"generated in {time.perf_counter() - t0:.1f} s", flush=True)
    freq = masks.reshape(c_total, n, -1).any(2).mean(1)
    print(f"concept image frequency: min {freq.min():.3f} median {np.median(freq):.3f} max {freq.max():.3f}; "
          f"mean concepts per image {masks.reshape(c_total, n, -1).any(2).sum(0).mean():.1f}")

    t0 = time.perf_counter()
    store = ConceptStore.from_dense(masks, level)
    t_store = time.perf_counter() - t0
    print(f"ours: ConceptStore.from_dense (incl. geometry) {t_store:.2f} s, {len(store.pair_row)} pairs")

    ref = None if args.no_reference else load_reference()
    if ref:
        ref_beam, ref_f, ref_metrics = ref
        t0 = time.perf_counter()
        flat = torch.from_numpy(masks.reshape(c_total, n, h * w))
        ref_masks = [flat[c] for c in range(c_total)]
        fl = flat.reshape(c_total, -1).float()
        overlap = fl @ fl.T
        disjoint = (overlap == 0)
        del fl
        cache_dir = REPO / "benchmarks" / "out" / f"ce_cache_{args.seed}_{n}_{c_total}_{h}"
        t_ref_prep = time.perf_counter() - t0
        print(f"reference: masks + disjoint matrix {t_ref_prep:.2f} s "
              f"({int(disjoint.sum() - disjoint.diagonal().sum()) // 2} disjoint concept pairs); dataset info cached in {cache_dir.name}")
        # warm its on-disk cache of dataset info (common/unique cells) and torch's kernels
        ref_beam.compute_beam_explanations(bitmaps=torch.from_numpy(units[0][2].reshape(n, -1)),
                                           masks=ref_masks, disjoint_info=disjoint, length=args.length,
                                           beam_size=args.beam, device="cpu", cache_dir=str(cache_dir))

    start = 2 * args.beam  # the reference's start beam
    rows = []
    for u, (kind, desc, dense) in enumerate(units):
        A = Bitmap.from_dense(dense)
        row = {"unit": u, "kind": kind, "desc": desc, "cells": int(dense.sum())}
        # ours, exhaustive beam (also gives the tie check)
        t0 = time.perf_counter()
        ex = beam_search(A, store, args.length, args.beam, start_beam=start, cache=SearchCache(),
                         final_beam=args.beam)
        row["t_beam"] = time.perf_counter() - t0
        # ours, MMESH: fresh cache (cold, per unit) then the store's shared cache (the pipeline's)
        t0 = time.perf_counter()
        mm = mmesh_search(A, store, args.length, args.beam, start_beam=start, cache=SearchCache())
        row["t_mmesh"] = time.perf_counter() - t0
        row.update(ours=mm.formula, ours_iou=mm.iou, ours_visited=mm.visited,
                   ours_compound=mm.visited_compound, beam_visited=ex.visited_compound)
        full, row["ours_rounds"] = ours_rounds(A, store, args.length, args.beam, start, final_beam=args.beam)
        row["ours_eq_beam"] = (mm.formula == ex.formula and abs(mm.iou - ex.iou) <= 1e-12
                               and [e.formula.key for e in full.beam] == [e.formula.key for e in ex.beam])
        top1, row["ours_rounds_top1"] = ours_rounds(A, store, args.length, args.beam, start)
        row["top1_same"] = top1.formula == full.formula
        row["tie"] = len(ex.beam) > 1 and ex.beam[0].score - ex.beam[1].score <= TIE
        row["runner_up"] = ex.beam[1] if len(ex.beam) > 1 else None
        if ref:
            box = []
            bm = torch.from_numpy(dense.reshape(n, -1))
            t0 = time.perf_counter()
            with count_reference_visits(ref_beam, box):
                best = ref_beam.compute_beam_explanations(
                    bitmaps=bm, masks=ref_masks, disjoint_info=disjoint, length=args.length,
                    beam_size=args.beam, device="cpu", cache_dir=str(cache_dir))
            row["t_ref"] = time.perf_counter() - t0
            row["ref_visited"], row["ref_rounds"] = sum(box), box
            if best is None:
                row.update(ref=None, ref_iou=0.0, ref_raw="None")
            else:
                row.update(ref=ref_to_ours(best, ref_f), ref_raw=str(best),
                           ref_iou=float(ref_metrics.compute_iou_from_masks(formula=best, masks=ref_masks,
                                                                            bitmaps=bm)))
            row["same"] = (row["ref"] == mm.formula) and abs(row["ref_iou"] - mm.iou) <= 1e-9
            row["same_iou"] = abs(row["ref_iou"] - mm.iou) <= 1e-9
        rows.append(row)
        fs = lambda f: "-" if f is None else to_str(f)  # noqa: E731
        line = (f"[{u:2d}] {kind:10s} {desc:28s} cells {row['cells']:6d}  ours {fs(mm.formula):28s} "
                f"{mm.iou:.6f} v={mm.visited_compound:5d} {row['t_mmesh']:.3f}s | beam {row['t_beam']:.3f}s")
        if ref:
            line += (f" | ref {fs(row['ref']):28s} {row['ref_iou']:.6f} v={row['ref_visited']:5d} "
                     f"{row['t_ref']:.2f}s {'OK' if row['same'] else ('TIE' if row['tie'] else 'MISMATCH')}"
                     f" rounds ours {row['ours_rounds']} top1 {row['ours_rounds_top1']} ref {row['ref_rounds']}")
        print(line, flush=True)

    report(rows, ref is not None, store, args)
    if ref and args.check_bounds:
        check_bounds(units[:args.check_bounds], store, ref, ref_masks, disjoint, cache_dir, args)


def check_bounds(units, store, ref, ref_masks, disjoint, cache_dir, args):
    """First round of the reference (its 2 x beam best singles, every concept, 3 operators):
    its estimate and our MMESH bound against the exact IoU of each candidate."""
    from collections import Counter

    from package_utils import mask_utils, optimal_utils
    ref_beam, ref_f, _ = ref
    n_c = len(ref_masks)
    tot = Counter()
    print("\n## Estimates vs exact IoU, first round (every candidate of the reference's search space)")
    for u, (kind, desc, dense) in enumerate(units):
        n = dense.shape[0]
        bm = torch.from_numpy(dense.reshape(n, -1))
        info = mask_utils.get_dataset_info(ref_masks, str(cache_dir))
        nq, cq = optimal_utils.get_optimal_heuristic_info(masks=ref_masks, bitmaps=bm, masks_quantities=info)
        hits = bm.sum()
        atoms = Counter({ref_f.Leaf(c): optimal_utils.compute_max_iou_from_label_info(cq[c], nq, hits)
                         for c in range(n_c)})
        top = [lab for lab, v in atoms.most_common(2 * args.beam) if v > 0]
        space = ref_beam.compute_next_search_space(top, [ref_f.Leaf(c) for c in range(n_c)])
        space = ref_beam.sort_search_space_by(search_space=space, label_mapping={ref_f.Leaf(c): c for c in range(n_c)},
                                              heuristic_info=(info, nq, cq), disjoint_info=disjoint, num_hits=hits,
                                              max_size_mask=dense[0].size)
        A = Bitmap.from_dense(dense)
        exact_ctx = nsearch._Ctx(A, store, SearchCache().bind(store), None)
        bound_ctx = nsearch._Ctx(A, store, SearchCache().bind(store), None)
        exact, bound, single = {}, {}, {}
        for lab in top:
            f = leaf(lab.val)
            n_l, i_l, y = exact_ctx.expansion(f, mmesh=False)
            x = exact_ctx.x_counts(f)
            size = np.stack([n_l + store.sizes - x, x, n_l - x])
            inter = np.stack([i_l + exact_ctx.Z - y, y, i_l - y])
            exact[lab.val] = nsearch._iou(inter, size, exact_ctx.total)
            bound[lab.val] = bound_ctx.expansion(f, mmesh=True)[2][0]
            single[lab.val] = float(nsearch._iou(i_l, n_l, exact_ctx.total))
        c = Counter()
        for cand in space:
            g = ref_to_ours(cand, ref_f)
            left, op, cc = g.leaves[0], ("OR", "AND", "AND NOT").index(g.ops[0]), g.leaves[1]
            ex, est, ob = float(exact[left][op, cc]), float(cand.iou), float(bound[left][op, cc])
            c["candidates"] += 1
            c["ours below exact"] += ob < ex - 1e-12
            if est < ex - 1e-12:
                if est > 0:
                    c["ref: positive estimate below exact (invalid bound)"] += 1
                elif op > 0 and disjoint[left, cc]:
                    c["ref: dropped, AND / AND NOT with a disjoint concept"] += 1
                elif ex <= single[left] + 1e-12:
                    c["ref: dropped, cannot beat its left side"] += 1
                else:
                    c["ref: dropped although it beats its left side"] += 1
        tot.update(c)
        print(f"unit {u} ({kind} {desc}): " + ", ".join(f"{k} {v}" for k, v in c.items()))
    print("all: " + ", ".join(f"{k} {v}" for k, v in tot.items()))


def report(rows, with_ref, store, args):
    med = lambda xs: statistics.median(xs)  # noqa: E731
    print("\n## Summary")
    counts = ", ".join(f"{k} {sum(r['kind'] == k for r in rows)}" for k in ("planted", "correlated", "random"))
    print(f"units: {len(rows)} ({counts}); "
          f"length {args.length}, beam {args.beam}, start beam {2 * args.beam}")
    print(f"ours: MMESH == exhaustive beam (best, IoU, whole beam) on {sum(r['ours_eq_beam'] for r in rows)}/{len(rows)} units")
    planted = [r for r in rows if r["kind"] == "planted"]
    print("| | median s/unit | total s | median exact evals (compound) |")
    print("|---|---|---|---|")
    print(f"| ours mmesh_search | {med([r['t_mmesh'] for r in rows]):.4f} | {sum(r['t_mmesh'] for r in rows):.2f} | "
          f"{med([r['ours_compound'] for r in rows]):.0f} |")
    print(f"| ours beam_search | {med([r['t_beam'] for r in rows]):.4f} | {sum(r['t_beam'] for r in rows):.2f} | "
          f"{med([r['beam_visited'] for r in rows]):.0f} |")
    if with_ref:
        print(f"| reference | {med([r['t_ref'] for r in rows]):.4f} | {sum(r['t_ref'] for r in rows):.2f} | "
              f"{med([r['ref_visited'] for r in rows]):.0f} |")
        ratios = [r["t_ref"] / r["t_mmesh"] for r in rows]
        print(f"speed: reference / ours (mmesh): ratio of medians {med([r['t_ref'] for r in rows]) / med([r['t_mmesh'] for r in rows]):.1f}x, "
              f"median of per-unit ratios {med(ratios):.1f}x (min {min(ratios):.1f}x, max {max(ratios):.1f}x)")
        vr = [r["ours_compound"] / max(r["ref_visited"], 1) for r in rows]
        top1 = [sum(r["ours_rounds_top1"]) for r in rows]
        print(f"visited (compound), ours with the whole final beam kept: median {med([sum(r['ours_rounds']) for r in rows]):.0f}; "
              f"ours (final round keeps 1, the default): median {med(top1):.0f}; "
              f"<= reference on {sum(t <= r['ref_visited'] for t, r in zip(top1, rows))}/{len(rows)} units; "
              f"same best as with the whole beam on {sum(r['top1_same'] for r in rows)}/{len(rows)}")
        for j in range(args.length - 1):
            print(f"  round {j + 1}: median ours {med([r['ours_rounds'][j] for r in rows]):.0f}, "
                  f"ours top-1 {med([r['ours_rounds_top1'][j] for r in rows]):.0f}, "
                  f"reference {med([r['ref_rounds'][j] if j < len(r['ref_rounds']) else 0 for r in rows]):.0f}")
        print(f"visited (compound): ours <= reference on {sum(r['ours_compound'] <= r['ref_visited'] for r in rows)}/{len(rows)} units; "
              f"median ours/ref {med(vr):.2f}")
        unique = [r for r in rows if not r["tie"]]
        same = [r for r in unique if r["same"]]
        tied = [r for r in rows if r["tie"]]
        print(f"correctness: {len(unique)} units with a unique best; same formula and IoU on {len(same)}/{len(unique)}; "
              f"{len(tied)} tied units: same formula on {sum(r['same'] for r in tied)}, same IoU on "
              f"{sum(r['same_iou'] for r in tied)}")
        for r in tied:
            ru = r["runner_up"]
            print(f"  tied unit {r['unit']} ({r['kind']} {r['desc']}): best {to_str(r['ours'])} IoU {r['ours_iou']:.12f}, "
                  f"runner-up {to_str(ru.formula)} IoU {ru.iou:.12f}; reference {to_str(r['ref']) if r['ref'] else None}")
        for r in rows:
            if not r["same"]:
                ru = r["runner_up"]
                print(f"  unit {r['unit']} ({r['kind']} {r['desc']}, {'tie' if r['tie'] else 'unique best'}): "
                      f"ours {to_str(r['ours']) if r['ours'] else None} IoU {r['ours_iou']:.12f}; "
                      f"ref {r['ref_raw']} = {to_str(r['ref']) if r['ref'] else None} IoU {r['ref_iou']:.12f}; "
                      f"ours runner-up {to_str(ru.formula) if ru else None} {ru.iou if ru else 0:.12f}")
    if planted:
        print("planted units, ours recovered the planted formula's concepts: "
              f"{sum(set(int(x[1:]) for x in r['desc'].replace('(', ' ').replace(')', ' ').split() if x.startswith('#')) == set(r['ours'].leaves) for r in planted)}/{len(planted)}")


if __name__ == "__main__":
    main()
