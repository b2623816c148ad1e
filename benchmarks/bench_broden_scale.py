"""Clustered CoEx at real-Broden size: store memory, geometry time, seconds per unit and cluster.

Usage: python benchmarks/bench_broden_scale.py [--units 6] [--compare-beam 2]
           [--workers 2] [--pool-units 4] [--rebuild]
           [--images 63305] [--size 112] [--concepts 1200] [--templates 3000] [--seed 0]

1. Store. A synthetic concept set the size of Broden (63,305 images, 112x112 masks,
   1,200 concepts: objects exclusive per pixel with Zipf frequencies, parts inside their
   parent object, materials, dense colors, image-level scenes and textures) is written as a
   real `PackedMasks` directory (masks/bits.u8, index.parquet, meta.json in the format of
   `nexplain.data.concepts`, plus a minimal concepts.parquet) under benchmarks/out/broden_scale/.
   To save generation time the *mask shapes* are tiled: `--templates` synthetic images are
   drawn once and every image reuses one template's shapes, with its own concept ids drawn
   per image (so frequencies, co-occurrence and disjointness are realistic; pixel rows
   repeat). Built once and reused (`--rebuild` to redo).
2. Geometry as the `geometry` rule computes it (`nexplain.compositional.store.save_geometry`, own
   process), then the store opened as an explain job does (`nexplain.compositional.store.open_store`
   with the saved geometry): time and RSS delta.
3. Units: 63,305 x 7 x 7 activation maps (layer4-like): 1-3 concepts' masks average-pooled
   to 7x7 with weights, plus a smooth random field and a per-image gain, minus a bias,
   ReLU (about 2/3 of the values are zero). Cached as .npy (generation not timed).
4. Per unit (timed, one process, one SearchCache across units as in a pipeline worker):
   clustered = `fit_clusters(k=5)` + `cluster_bitmaps` + per cluster
   `mmesh_search(length=3, beam=5, start_beam=10)` + `formula_metrics(A, f)` (as the pipeline);
   CoEx = `top_bitmap` + `mmesh_search(length=3, beam=5)` + metrics. Optionally the
   exhaustive `beam_search` for comparison, and the first units again in a fork pool of
   `--workers` processes (as `explain_layer`) for a measured 2-core throughput.
Memory from /proc/self/status: VmRSS, RssAnon (private), RssFile (mapped file pages,
i.e. bits.u8 pages touched, shared between workers and evictable), VmHWM (peak).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as tnf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from nexplain.compositional import bitmaps as nbm  # noqa: E402
from nexplain.compositional.formulas import to_str  # noqa: E402
from nexplain.compositional.masks import ConceptStore, popcount_rows  # noqa: E402
from nexplain.compositional.metrics import formula_metrics  # noqa: E402
from nexplain.compositional.search import SearchCache, beam_search, mmesh_search  # noqa: E402
from nexplain.compositional.store import open_store  # noqa: E402
from nexplain.data.concepts import BITORDER, pack_masks, row_bytes_for  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "broden_scale"


def mem() -> dict:
    """MB figures of this process from /proc/self/status."""
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) / 1024
    return out


# --------------------------------------------------------------------------- store

def _ellipse(h, w, rng, lo=0.08, hi=0.45):
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(lo * h, hi * h), rng.uniform(lo * w, hi * w)
    y, x = np.ogrid[:h, :w]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def _rect(h, w, rng, lo=0.1, hi=0.6):
    hh, ww = int(rng.uniform(lo, hi) * h) + 1, int(rng.uniform(lo, hi) * w) + 1
    r0, c0 = rng.integers(0, h - hh + 1), rng.integers(0, w - ww + 1)
    m = np.zeros((h, w), bool)
    m[r0:r0 + hh, c0:c0 + ww] = True
    return m


def _shape(h, w, rng, **kw):
    return _ellipse(h, w, rng, **kw) if rng.random() < 0.6 else _rect(h, w, rng, **kw)


def make_templates(n_templates, size, rng):
    """Pool of packed rows and, per template, slots (kind, parent slot, pool row)."""
    h = w = size
    rows, slots = [], []
    for _ in range(n_templates):
        t, label = [], np.full((h, w), -1)
        n_obj = int(rng.integers(2, 11))
        for j in range(n_obj):
            m = np.ones((h, w), bool) if j == 0 and rng.random() < 0.3 else _shape(h, w, rng)
            label[m] = j
        obj_masks = [label == j for j in range(n_obj)]
        obj_slot = {}
        for j, m in enumerate(obj_masks):
            if m.any():
                obj_slot[j] = len(t)
                t.append(("object", -1, len(rows)))
                rows.append(m)
        for _ in range(int(rng.integers(0, 7))):
            j = int(rng.choice(list(obj_slot)))
            m = obj_masks[j] & _shape(h, w, rng, lo=0.05, hi=0.3)
            if m.any():
                t.append(("part", obj_slot[j], len(rows)))
                rows.append(m)
        for _ in range(int(rng.integers(0, 5))):
            t.append(("material", -1, len(rows)))
            rows.append(_shape(h, w, rng))
        for _ in range(int(rng.integers(4, 11))):
            m = _ellipse(h, w, rng, 0.1, 0.5) | _ellipse(h, w, rng, 0.05, 0.3)
            t.append(("color", -1, len(rows)))
            rows.append(m)
        slots.append(t)
    return pack_masks(np.stack(rows), row_bytes_for((h, w))), slots


def build_store(out: Path, n_images: int, size: int, n_concepts: int, n_templates: int, seed: int) -> dict:
    """Write masks/{bits.u8,index.parquet,meta.json} and concepts.json (kinds, names)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    # Broden-like category sizes, scaled to n_concepts
    share = {"object": 0.475, "part": 0.19, "material": 0.027, "color": 0.009, "scene": 0.26, "texture": 0.039}
    counts = {k: max(2, int(round(v * n_concepts))) for k, v in share.items()}
    counts["object"] += n_concepts - sum(counts.values())
    first, kinds = {}, []
    for k, v in counts.items():
        first[k] = len(kinds)
        kinds += [k] * v
    zipf = lambda n, a: (lambda p: p / p.sum())(1.0 / np.arange(1, n + 1) ** a)  # noqa: E731
    p_obj, p_mat, p_col = zipf(counts["object"], 1.0), zipf(counts["material"], 0.8), zipf(counts["color"], 0.3)
    p_scene = zipf(counts["scene"], 0.9)
    # parts belong to the 120 most frequent objects, 1-5 each
    parts_of, nxt = {}, 0
    for o in range(min(120, counts["object"])):
        k = int(rng.integers(1, 6))
        parts_of[o] = [(nxt + i) % counts["part"] for i in range(k)]
        nxt += k
    pool, slots = make_templates(n_templates, size, rng)
    pool_px = popcount_rows(pool).astype(np.int32)
    t_templates = time.perf_counter() - t0
    full = size * size
    conc, img, src = [], [], []
    for i in range(n_images):
        if rng.random() < 0.09:  # a texture image (DTD-like): one image-level label
            conc.append(first["texture"] + int(rng.integers(counts["texture"])))
            img.append(i)
            src.append(-1)
            continue
        t = slots[int(rng.integers(n_templates))]
        n_obj = sum(kd == "object" for kd, _, _ in t)
        objs = rng.choice(counts["object"], size=n_obj, replace=False, p=p_obj)
        n_mat = sum(kd == "material" for kd, _, _ in t)
        mats = rng.choice(counts["material"], size=n_mat, replace=False, p=p_mat)
        n_col = sum(kd == "color" for kd, _, _ in t)
        cols = rng.choice(counts["color"], size=n_col, replace=False, p=p_col)
        seen, slot_obj, io = set(), {}, iter(objs)
        im, ic = iter(mats), iter(cols)
        for s, (kd, parent, row) in enumerate(t):
            if kd == "object":
                c = int(next(io))
                slot_obj[s] = c
                c += first["object"]
            elif kd == "part":
                options = parts_of.get(slot_obj[parent])
                if not options:
                    continue
                c = first["part"] + int(options[int(rng.integers(len(options)))])
            elif kd == "material":
                c = first["material"] + int(next(im))
            else:
                c = first["color"] + int(next(ic))
            if c in seen:
                continue
            seen.add(c)
            conc.append(c)
            img.append(i)
            src.append(row)
        if rng.random() < 0.6:
            conc.append(first["scene"] + int(rng.choice(counts["scene"], p=p_scene)))
            img.append(i)
            src.append(-1)
    conc, img, src = np.array(conc, np.int64), np.array(img, np.int64), np.array(src, np.int64)
    order = np.lexsort((img, conc))
    conc, img, src = conc[order], img[order], src[order]
    pixel = src >= 0
    row = np.full(len(conc), -1, np.int64)
    row[pixel] = np.arange(pixel.sum())
    n_px = np.where(pixel, pool_px[np.maximum(src, 0)], full).astype(np.int32)
    masks_dir = out / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    t1 = time.perf_counter()
    with open(masks_dir / "bits.u8", "wb") as f:
        ps = src[pixel]
        for s in range(0, len(ps), 1 << 15):
            f.write(pool[ps[s:s + (1 << 15)]].tobytes())
    t_bits = time.perf_counter() - t1
    table = pa.table({"concept": pa.array(conc.astype(np.int32)), "image_id": pa.array(img.astype(np.int32)),
                      "row": pa.array(row), "n_pixels": pa.array(n_px)})
    pq.write_table(table, masks_dir / "index.parquet", compression="zstd")
    meta = {"N": n_images, "C": n_concepts, "sh": size, "sw": size, "row_bytes": row_bytes_for((size, size)),
            "bitorder": BITORDER, "n_rows": int(pixel.sum())}
    (masks_dir / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    info = {"kinds": kinds, "counts": counts, "n_pairs": int(len(conc)), "n_pixel_pairs": int(pixel.sum()),
            "n_templates": n_templates, "pool_rows": int(len(pool)), "seed": seed,
            "seconds_templates": t_templates, "seconds_bits": t_bits,
            "seconds_total": time.perf_counter() - t0, "bits_bytes": int(pixel.sum()) * meta["row_bytes"],
            "params": [n_images, size, n_concepts, n_templates, seed]}
    write_concepts_table(out, kinds)
    (out / "concepts.json").write_text(json.dumps(info))
    return info


def write_concepts_table(out: Path, kinds: list[str]) -> None:
    """The columns of concepts.parquet that `open_store` reads (names by id)."""
    pq.write_table(pa.table({"concept": pa.array(np.arange(len(kinds), dtype=np.int32)),
                             "number": pa.array(np.arange(1, len(kinds) + 1, dtype=np.int32)),
                             "name": pa.array([f"{k}{c}" for c, k in enumerate(kinds)]),
                             "category": pa.array(kinds)}), out / "concepts.parquet")


# --------------------------------------------------------------------------- units

def pooled(store: ConceptStore, c: int, g: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, (n, g, g) float32 share of each g x g block covered by concept c)."""
    bm = store.bitmap(c)
    h, w = store.shape
    out = np.empty((len(bm.ids), g, g), np.float32)
    for s in range(0, len(bm.ids), 4096):
        cells = np.unpackbits(bm.rows[s:s + 4096], axis=1, count=h * w, bitorder=BITORDER)
        x = torch.from_numpy(cells.reshape(-1, 1, h, w).astype(np.float32))
        out[s:s + 4096] = tnf.adaptive_avg_pool2d(x, g)[:, 0].numpy()
    return bm.ids, out


def make_unit(store: ConceptStore, kinds, u: int, seed: int, g: int = 7) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng([seed, u])
    n = store.n_images
    freq = np.diff(store.ptr) / n
    by_kind = lambda k, lo, hi: [c for c in range(store.n_concepts)  # noqa: E731
                                 if kinds[c] == k and lo <= freq[c] <= hi]
    pools = [by_kind("object", 0.01, 0.5), by_kind("color", 0.05, 0.9), by_kind("part", 0.005, 0.3),
             by_kind("material", 0.01, 0.5), by_kind("scene", 0.005, 0.2)]
    k = 1 + u % 3
    cs = [int(rng.choice(pools[int(j)])) for j in rng.choice([0, 0, 1, 2, 3, 4], size=k, replace=False)]
    x = torch.from_numpy(rng.standard_normal((n, 1, 3, 3)).astype(np.float32))
    maps = 0.35 * tnf.interpolate(x, size=(g, g), mode="bilinear", align_corners=False)[:, 0].numpy()
    maps *= rng.uniform(0.5, 1.5, (n, 1, 1)).astype(np.float32)
    for c in cs:
        ids, p = pooled(store, c, g)
        maps[ids] += rng.uniform(0.8, 1.6) * p
    maps -= 0.1
    np.maximum(maps, 0, out=maps)
    return maps.astype(np.float32), "+".join(f"{kinds[c]}{c}" for c in cs)


# --------------------------------------------------------------------------- per unit

_G: dict = {}


def explain_unit(job):
    u, path, desc, compare = job
    store, cache = _G["store"], _G["cache"]
    maps = np.load(path)
    ids, n, shape = np.arange(store.n_images), store.n_images, store.shape
    r = {"unit": u, "desc": desc, "zeros": float((maps == 0).mean())}
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    ranges, info = nbm.fit_clusters(maps.ravel(), k=5)
    r["t_cluster"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bms = nbm.cluster_bitmaps(ids, maps, n, shape, ranges)
    r["t_bitmaps"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    counts = store.pair_counts_many(bms)  # as nexplain.compositional.explain does: one read for the K ranges
    r["t_pair_counts"] = time.perf_counter() - t0
    r["clusters"] = []
    for j, (rg, A) in enumerate(zip(ranges, bms)):
        cl = {"cluster": j, "lo": rg.lo, "hi": rg.hi, "cells": A.count(), "images": len(A.ids)}
        t0 = time.perf_counter()
        res = mmesh_search(A, store, length=3, beam=5, start_beam=10, cache=cache, pair_counts=counts[j])
        cl["t_search"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = formula_metrics(A, res.formula, store) if res.formula is not None else {}
        cl["t_metrics"] = time.perf_counter() - t0
        cl.update(formula=to_str(res.formula) if res.formula else None, iou=res.iou,
                  visited=res.visited, visited_compound=res.visited_compound,
                  sample_coverage=m.get("sample_coverage", 0.0), activation_coverage=m.get("activation_coverage", 0.0))
        r["clusters"].append(cl)
    r["t_clustered"] = time.perf_counter() - t_all
    # CoEx on the top-0.5% cells
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    A, tinfo = nbm.top_bitmap(ids, maps, n, shape)
    r["coex_t_bitmap"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = mmesh_search(A, store, length=3, beam=5, cache=cache)
    r["coex_t_search"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = formula_metrics(A, res.formula, store) if res.formula is not None else {}
    r["coex_t_metrics"] = time.perf_counter() - t0
    r["t_coex"] = time.perf_counter() - t_all
    r.update(coex_formula=to_str(res.formula) if res.formula else None, coex_iou=res.iou,
             coex_cells=A.count(), coex_visited=res.visited_compound)
    r["mem"] = mem()
    if compare:  # after the timed part: these searches warm the cache
        t0 = time.perf_counter()
        ex = beam_search(A, store, length=3, beam=5, cache=cache)
        r["coex_t_beam"] = time.perf_counter() - t0
        r["coex_beam_same"] = ex.formula == res.formula
        big = max(range(len(bms)), key=lambda j: bms[j].count())
        t0 = time.perf_counter()
        ex = beam_search(bms[big], store, length=3, beam=5, start_beam=10, cache=cache)
        r["big_t_beam"] = time.perf_counter() - t0
        r["big"] = big
        r["big_beam_same"] = to_str(ex.formula) == r["clusters"][big]["formula"]
    r["pid"] = os.getpid()
    return r


def _init(store):
    torch.set_num_threads(1)
    import sklearn.cluster  # noqa: F401  (imported lazily by fit_clusters: once per worker, not per unit)
    # a fresh cache, as in a pipeline worker (the parent never searches before it forks)
    _G.update(store=store, cache=SearchCache().bind(store))


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=63305)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--concepts", type=int, default=1200)
    ap.add_argument("--templates", type=int, default=3000)
    ap.add_argument("--units", type=int, default=6)
    ap.add_argument("--compare-beam", type=int, default=2, metavar="N",
                    help="for the first N units also time the exhaustive beam_search (CoEx bitmap, largest cluster)")
    ap.add_argument("--workers", type=int, default=2, help=">1: also run units in a fork pool of that size")
    ap.add_argument("--pool-units", type=int, default=4, help="units run in the pool")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    out = Path(args.out)
    params = [args.images, args.size, args.concepts, args.templates, args.seed]
    info_path = out / "concepts.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else None
    if args.rebuild or info is None or info["params"] != params:
        print("building the store ...", flush=True)
        info = build_store(out, args.images, args.size, args.concepts, args.templates, args.seed)
        (out / "geometry.npz").unlink(missing_ok=True)
        print(f"built in {info['seconds_total']:.1f} s (templates {info['seconds_templates']:.1f} s, "
              f"bits.u8 {info['seconds_bits']:.1f} s)")
    kinds = info["kinds"]
    if not (out / "concepts.parquet").is_file():
        write_concepts_table(out, kinds)
    print(f"store: {args.images} images {args.size}x{args.size}, {args.concepts} concepts {info['counts']}, "
          f"{info['n_pairs']:,} pairs ({info['n_pixel_pairs']:,} pixel rows = "
          f"{info['n_pixel_pairs'] / args.images:.1f} per image, {info['bits_bytes'] / 2**30:.2f} GiB bits.u8 on disk; "
          f"shapes tiled from {info['pool_rows']:,} rows of {info['n_templates']} templates)")

    # --- the `geometry` rule: nexplain.compositional.store.save_geometry, in its own process
    geo = out / "geometry.npz"
    code = ("import sys, time, resource; sys.path.insert(0, sys.argv[3]); from nexplain.compositional.store import save_geometry; "
            "t = time.perf_counter(); save_geometry(sys.argv[1], sys.argv[2]); "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    res = subprocess.run([sys.executable, "-c", code, str(out), str(geo), str(REPO / "src")],
                         capture_output=True, text=True, check=True)
    t_geo, geo_peak = map(float, res.stdout.split())
    print(f"geometry rule (save_geometry, own process): {t_geo:.1f} s, peak RSS {geo_peak:.0f} MB "
          f"(bits.u8 pages read through the memmap count here), geometry.npz {geo.stat().st_size / 2**20:.0f} MB")

    # --- an explain job opens the store: nexplain.compositional.store.open_store(concepts_dir, geometry)
    m0 = mem()
    t0 = time.perf_counter()
    store, names = open_store(out, geo)
    t_open = time.perf_counter() - t0
    m1 = mem()
    idx = sum(a.nbytes for a in (store.pair_concept, store.pair_image, store.pair_row, store.area))
    own = sum(a.nbytes for a in (store.box, store.rect, store.img_pairs, store.img_ptr, store.ptr, store.sizes))
    print(f"open_store with saved geometry: {t_open:.2f} s; RSS +{m1['VmRSS'] - m0['VmRSS']:.0f} MB "
          f"(anon +{m1['RssAnon'] - m0['RssAnon']:.0f}, file +{m1['RssFile'] - m0['RssFile']:.0f}); index arrays "
          f"{idx / 2**20:.0f} MB + geometry and image index {own / 2**20:.0f} MB; bits.u8 "
          f"{store.bits.nbytes / 2**30:.2f} GiB memory-mapped, not read; process RSS {m1['VmRSS']:.0f} MB "
          f"(libraries: torch, pyarrow, pandas)")
    freq = np.diff(store.ptr) / store.n_images
    print(f"concept image frequency: median {np.median(freq):.4f}, max {freq.max():.3f}; "
          f"{(freq >= 0.1).sum()} concepts in >= 10% of images")

    # --- units (maps cached, generation not timed)
    udir = out / f"units_s{args.seed}"
    udir.mkdir(exist_ok=True)
    jobs = []
    t0 = time.perf_counter()
    for u in range(args.units):
        path, desc_path = udir / f"u{u}.npy", udir / f"u{u}.txt"
        if not path.is_file():
            maps, desc = make_unit(store, kinds, u, args.seed)
            np.save(path, maps)
            desc_path.write_text(desc)
        jobs.append((u, str(path), desc_path.read_text(), u < args.compare_beam))
    print(f"unit maps ready ({time.perf_counter() - t0:.1f} s, not timed)", flush=True)

    _init(store)
    rows = []
    for job in jobs:
        r = explain_unit(job)
        rows.append(r)
        print_unit(r)
    summarize(rows, args)
    if args.workers > 1:
        pj = [(u, p, d, False) for u, p, d, _ in jobs[:args.pool_units]]
        t0 = time.perf_counter()
        with mp.get_context("fork").Pool(args.workers, _init, (store,)) as pool:
            prow = pool.map(explain_unit, pj, chunksize=1)
        wall = time.perf_counter() - t0
        seq = sum(r["t_clustered"] + r["t_coex"] for r in rows[:len(pj)])
        par = sum(r["t_clustered"] + r["t_coex"] for r in prow)
        share = sum(r["t_clustered"] for r in prow) / par
        print(f"\n{args.workers} fork workers (fresh caches), units 0-{len(pj) - 1}, clustered + CoEx each: wall {wall:.1f} s; "
              f"sum of per-unit times {par:.1f} s in the pool vs {seq:.1f} s in one process "
              f"(each unit {par / seq:.2f}x slower side by side); throughput {seq / wall:.2f}x one process")
        print(f"  per-worker peak RSS {max(r['mem']['VmHWM'] for r in prow):.0f} MB "
              f"(anon at the end of a unit: max {max(r['mem']['RssAnon'] for r in prow):.0f} MB)")
        print(f"projection from the pool's throughput: 512 units, clustered K=5: 512 x {wall / len(pj) * share:.1f} s "
              f"= {512 * wall / len(pj) * share / 3600:.2f} h")
    print(f"\nthis process: peak RSS (VmHWM) {mem()['VmHWM']:.0f} MB; script wall {time.perf_counter() - t_start:.0f} s")


def print_unit(r):
    cl = r["clusters"]
    print(f"\nunit {r['unit']} ({r['desc']}, {r['zeros']:.0%} zeros): clustered {r['t_clustered']:.1f} s "
          f"(k-means {r['t_cluster']:.2f}, bitmaps {r['t_bitmaps']:.2f}, pair counts {r['t_pair_counts']:.2f}, "
          f"search {sum(c['t_search'] for c in cl):.2f}, "
          f"metrics {sum(c['t_metrics'] for c in cl):.2f}); CoEx {r['t_coex']:.1f} s "
          f"(bitmap {r['coex_t_bitmap']:.2f}, search {r['coex_t_search']:.2f}, metrics {r['coex_t_metrics']:.2f}); "
          f"RSS {r['mem']['VmRSS']:.0f} MB (anon {r['mem']['RssAnon']:.0f}, file {r['mem']['RssFile']:.0f}), "
          f"peak {r['mem']['VmHWM']:.0f} MB", flush=True)
    for c in cl:
        print(f"  cluster {c['cluster']} ({c['lo']:.3f}, {c['hi']:.3f}]: {c['cells']:>11,} cells in {c['images']:>6,} images; "
              f"search {c['t_search']:6.2f} s (visited {c['visited_compound']:4d}), metrics {c['t_metrics']:.2f} s; "
              f"{c['formula']} IoU {c['iou']:.4f}, sample cov. {c['sample_coverage']:.2f}")
    print(f"  CoEx: {r['coex_cells']:,} cells; {r['coex_formula']} IoU {r['coex_iou']:.4f} (visited {r['coex_visited']})")
    if "coex_t_beam" in r:
        print(f"  exhaustive beam_search (cache warm from the searches above): CoEx {r['coex_t_beam']:.2f} s "
              f"(same best {r['coex_beam_same']}); largest cluster {r['big_t_beam']:.2f} s "
              f"(same best {r['big_beam_same']})", flush=True)


def summarize(rows, args):
    med, mean = statistics.median, statistics.fmean
    cl = [c for r in rows for c in r["clusters"]]
    print("\n## Summary (one process, units in sequence, one cache)")
    print("| per unit | mean s | median s | max s |")
    print("|---|---|---|---|")
    for name, key in [("clustered K=5, total", "t_clustered"), ("  fit_clusters (k-means)", "t_cluster"),
                      ("  cluster_bitmaps", "t_bitmaps"), ("  pair_counts_many", "t_pair_counts"), ("CoEx, total", "t_coex"),
                      ("  top_bitmap", "coex_t_bitmap"), ("  mmesh_search", "coex_t_search"),
                      ("  evaluate + metrics", "coex_t_metrics")]:
        xs = [r[key] for r in rows]
        print(f"| {name} | {mean(xs):.2f} | {med(xs):.2f} | {max(xs):.2f} |")
    for name, key in [("per cluster: mmesh_search", "t_search"), ("per cluster: evaluate + metrics", "t_metrics")]:
        xs = [c[key] for c in cl]
        print(f"| {name} | {mean(xs):.2f} | {med(xs):.2f} | {max(xs):.2f} |")
    search = sum(c["t_search"] for c in cl) / sum(r["t_clustered"] for r in rows)
    print(f"search share of the clustered time: {search:.0%}; clusters by size rank (largest first), mean search s: "
          + ", ".join(f"{mean([sorted(r['clusters'], key=lambda c: -c['cells'])[k]['t_search'] for r in rows]):.1f}"
                      for k in range(min(len(r["clusters"]) for r in rows))))
    print(f"visited (compound) per cluster: median {med([c['visited_compound'] for c in cl]):.0f}, "
          f"max {max(c['visited_compound'] for c in cl)}")
    per_unit = mean([r["t_clustered"] for r in rows])
    print(f"projection, 512 units, K=5, 2 worker processes on 2 cores, assuming perfect 2x scaling: "
          f"512 x {per_unit:.1f} s / 2 = {512 * per_unit / 2 / 3600:.2f} h (target < 2 h); "
          f"CoEx: {512 * mean([r['t_coex'] for r in rows]) / 2 / 3600:.2f} h")
    print(f"peak RSS over the units: {max(r['mem']['VmHWM'] for r in rows):.0f} MB "
          f"(anon at the end of a unit: max {max(r['mem']['RssAnon'] for r in rows):.0f} MB)")


if __name__ == "__main__":
    main()
