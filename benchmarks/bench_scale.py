"""Scale projection (issue 18): every pipeline stage on a synthetic Broden-size probe set.

Usage: python benchmarks/bench_scale.py [--images 63305] [--concepts 1200]
           [--units-l4 2048] [--units-l3 1024] [--sample-images 512] [--forward-images 128]
           [--coex-units 3] [--coex-units-l3 1] [--le-units 2048] [--sim-units 1] [--sim-steps 3]
           [--replay-val 16] [--replay-test 48] [--pure-pairs 64] [--vlm-images 128]
           [--repeats 2] [--gpu-r50 3229] [--gpu-vit-ratio 2.05] [--node-cores 16] [--stages all] [--seed 0]

What runs (each stage in its own process, so its peak RSS is its own; `--stages a,b` reruns some
and keeps the others' figures from benchmarks/out/scale/stages/):

- A Broden-format sample of `--sample-images` images (224 px JPEG, 112x112 label PNGs per
  category, `--concepts` labels over objects/parts/materials/colors/scenes/textures) under
  benchmarks/out/scale/, and the Broden-size concept store of bench_broden_scale.py (63,305
  images, 1,200 concepts; built there once, reused). Neither is timed as a stage.
- forward: JPEG decode + transform per image (1 thread; ResNet and open_clip transforms) and a
  ResNet-50 (random weights, 224 px) full forward pass (2 threads, channels_last, batch 32).
- extract_layer4 / extract_layer3: `nexplain.activations.activations`: the forward pass stopped at the
  layer (per batch best of `--repeats`); the writing alone (`extract_batches` fed the layer's
  real outputs through an identity module: hooks, summary and maps Parquet; best
  of `--repeats`); `extract_activations` end to end (Broden reader, DataLoader decode, as the
  rule calls it; once); on `--forward-images` images.
- concepts: `nexplain.data.concepts.build_concept_tables` on the sample (as the `concepts` rule).
- geometry: `nexplain.compositional.store.save_geometry` and `open_store` on the full-size store.
- coex: Clustered CoEx (K=5) and CoEx per unit on the full-size store (bench_broden_scale's
  per-unit code, the calls of `nexplain.compositional.explain`), 7x7 (layer4-like) and 14x14 (layer3-like) maps.
- linear: `nexplain.linear.linear.explain_units` on a 63,305 x 1,200 label matrix (presence from the
  store) for 1 unit and for `--le-units` units: fixed cost + seconds per unit.
- simulate_l4: `nexplain.linear.scoring.layer_ablations` + `score_rows` (linear tail, optim + norm) on
  all 63,305 images for `--sim-units` units x 9 explanations (LE x2, NetDissect, CoEx, 5
  clusters); optim is timed at `--sim-steps` Adam steps and scaled to the config's 100.
- simulate_l3: the same with the tail replayed after layer3 (`nexplain.linear.tail.Tail`, norm only),
  on `--replay-val` + `--replay-test` images of random 1024 x 14 x 14 maps.
- pure: `nexplain.pure.relevance.relevances` (layer4 units, earlier layer1-3, batch 32).
- vlm: `nexplain.vlm.vlm.image_embeddings` with an open_clip ViT-B-32 of random weights.

Projection. "Here, full size": measured seconds scaled linearly to 63,305 images and to
ResNet-50's units (2,048 in layer4, 1,024 in layer3), CPU stages sharded by units over this
machine's 2 cores (perfect scaling assumed). "N nodes" (a node = 1 GPU + 16 cores): GPU time =
this CPU's measured time divided by a GPU/CPU throughput ratio that is an ASSUMPTION, not a
measurement: a public ResNet-50 inference figure (`--gpu-r50`, img/s) times the seconds per
image of the reference forward pass timed around the stage (below); decode runs in `node-cores - 1` loader workers; CPU per-core speed as here;
unit-sharded CPU stages (CoEx) divide by 16 N; jobs that are one per layer/source/VLM use at
most that many nodes. JSON: benchmarks/out/scale/bench_scale.json; table: table.md beside it.

Shared machine. Before and after every stage a probe process times a ResNet-50 full forward
pass (random 224 px batch of 16, best of 2). A stage's GPU/CPU ratio uses the mean of its two
probes, so CPU-measured torch work is converted under the load it ran with; the table's
"load" column is that mean over the lowest such mean of any stage (1.0x = the quietest stage).
CPU-only figures ("full size, here", CoEx, LE) are as measured, load included.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

OUT = REPO / "benchmarks" / "out" / "scale"
STORE = REPO / "benchmarks" / "out" / "broden_scale"   # bench_broden_scale.py's store, shared
STAGES = ("forward", "extract_layer4", "extract_layer3", "concepts", "geometry", "coex", "linear",
          "simulate_l4", "simulate_l3", "pure", "vlm")
CATEGORIES = ("object", "part", "material", "color", "scene", "texture")
SHARE = {"object": 0.475, "part": 0.19, "material": 0.027, "color": 0.009, "scene": 0.26, "texture": 0.039}
R50 = {"source": "torchvision", "arch": "resnet50", "weights": None, "num_classes": 1000,
       "input": {"size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
VIT = {"name": "ViT-B-32", "pretrained": None}
EARLIER = ["layer1", "layer2", "layer3"]
SPLIT = (0.7, 0.1, 0.2)
OPTIM_STEPS = 100     # config.yaml linear.simulate.optim.steps
PURE_TOP = 50         # config.yaml pure.top
ROWS_PER_UNIT = 9     # explanations scored per unit: LE(label), LE(VLM), NetDissect, CoEx, 5 clusters


def mem() -> dict:
    """MB: this process's VmRSS and VmHWM (peak), and the peak of its waited-for children."""
    import resource
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024
    out["children_peak"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return out


def load() -> float:
    return os.getloadavg()[0]


# --------------------------------------------------------------------------- the sample

def _counts(n_concepts: int) -> dict:
    counts = {k: max(2, int(round(v * n_concepts))) for k, v in SHARE.items()}
    counts["object"] += n_concepts - sum(counts.values())
    return counts


def _zipf(n, a):
    p = 1.0 / np.arange(1, n + 1) ** a
    return p / p.sum()


def _save_labels(labels: np.ndarray, path: Path) -> None:
    from PIL import Image
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., 0], rgb[..., 1] = labels % 256, labels // 256
    Image.fromarray(rgb).save(path, format="PNG", compress_level=6)


def make_sample(root: Path, n: int, n_concepts: int, seed: int) -> None:
    """A Broden-format root: 224 px JPEG images, 112x112 label PNGs (object, part, material,
    color), image-level scenes (60% of images) and textures (9%), Zipf label frequencies."""
    import csv

    from PIL import Image
    from bench_broden_scale import _ellipse, _shape

    rng = np.random.default_rng([seed, 18])
    counts = _counts(n_concepts)
    first, nxt = {}, 1
    for cat in CATEGORIES:
        first[cat], nxt = nxt, nxt + counts[cat]
    p = {"object": _zipf(counts["object"], 1.0), "material": _zipf(counts["material"], 0.8),
         "color": _zipf(counts["color"], 0.3), "scene": _zipf(counts["scene"], 0.9)}
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    h = w = 112
    yy, xx = np.mgrid[:224, :224] / 224.0
    rows, freq = [], np.zeros(nxt, np.int64)
    for i in range(n):
        stem = f"img{i:06d}"
        obj = np.zeros((h, w), np.int32)
        for j, o in enumerate(rng.choice(counts["object"], int(rng.integers(2, 11)), replace=False, p=p["object"])):
            m = np.ones((h, w), bool) if j == 0 and rng.random() < 0.3 else _shape(h, w, rng)
            obj[m] = first["object"] + o
        part = np.zeros((h, w), np.int32)
        present = np.unique(obj[obj > 0])
        for _ in range(int(rng.integers(0, 7))):
            if not len(present):
                break
            m = (obj == rng.choice(present)) & _shape(h, w, rng, lo=0.05, hi=0.3)
            part[m] = first["part"] + int(rng.integers(counts["part"]))
        mat = np.zeros((h, w), np.int32)
        for c in rng.choice(counts["material"], int(rng.integers(0, 5)), replace=False, p=p["material"]):
            mat[_shape(h, w, rng)] = first["material"] + c
        col = np.zeros((h, w), np.int32)
        for c in rng.choice(counts["color"], int(rng.integers(4, 11)), replace=False, p=p["color"]):
            col[_ellipse(h, w, rng, 0.1, 0.5) | _ellipse(h, w, rng, 0.05, 0.3)] = first["color"] + c
        row = {"image": f"{stem}.jpg", "split": "train", "ih": 224, "iw": 224, "sh": h, "sw": w}
        for cat, lab in (("object", obj), ("part", part), ("material", mat), ("color", col)):
            if lab.any():
                _save_labels(lab, tmp / "images" / f"{stem}_{cat}.png")
                row[cat] = f"{stem}_{cat}.png"
                freq[np.unique(lab[lab > 0])] += 1
            else:
                row[cat] = ""
        row["scene"] = str(first["scene"] + int(rng.choice(counts["scene"], p=p["scene"]))) if rng.random() < 0.6 else ""
        row["texture"] = str(first["texture"] + int(rng.integers(counts["texture"]))) if rng.random() < 0.09 else ""
        for cat in ("scene", "texture"):
            if row[cat]:
                freq[int(row[cat])] += 1
        # the image: a colour per object label, shading, a smooth field and pixel noise -> JPEG
        palette = rng.integers(0, 256, (nxt, 3)).astype(np.float32)
        big = np.repeat(np.repeat(obj, 2, 0), 2, 1)
        img = palette[big] * (0.7 + 0.3 * np.sin(6.28 * (rng.random() * xx + rng.random() * yy)))[..., None]
        img += rng.normal(0, 12, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp / "images" / f"{stem}.jpg", quality=90)
        rows.append(row)
    cols = ("image", "split", "ih", "iw", "sh", "sw") + CATEGORIES

    def write(name, header, data):
        with open(tmp / name, "w", newline="") as f:
            wr = csv.writer(f, lineterminator="\n")
            wr.writerow(header)
            wr.writerows(data)

    write("index.csv", cols, ([r[c] for c in cols] for r in rows))
    labels, cats = [], []
    for cat in CATEGORIES:
        nums = range(first[cat], first[cat] + counts[cat])
        cats.append((cat, nums[0], nums[-1], len(nums), n))
        write(f"c_{cat}.csv", ("code", "number", "name", "frequency", "coverage"),
              [(k + 1, u, f"{cat}{u}", freq[u], "0.1") for k, u in enumerate(nums)])
        labels += [(u, f"{cat}{u}", f"{cat}({max(freq[u], 1)})", freq[u], "0.1", "") for u in nums]
    write("label.csv", ("number", "name", "category", "frequency", "coverage", "syns"), labels)
    write("category.csv", ("name", "first", "last", "count", "frequency"), cats)
    (tmp / "sample.json").write_text(json.dumps({"n": n, "concepts": n_concepts, "seed": seed}))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)


def sample_root(a) -> Path:
    return OUT / f"broden_sample_{a.sample_images}_{a.concepts}_s{a.seed}"


def table_of(a, n: int):
    """The sample's ImageTable (the Broden reader) cut to its first n images."""
    from nexplain.data.folder import open_dataset
    t = open_dataset("broden", sample_root(a))
    return dataclasses.replace(t, paths=t.paths[:n], splits=t.splits[:n])


def decoded(transform, table):
    """The table's images decoded and transformed, stacked (n, 3, H, W)."""
    import torch
    from nexplain.data.images import load_image
    return torch.stack([transform(load_image(p)) for p in table.paths])


# --------------------------------------------------------------------------- stages

def stage_forward(a) -> dict:
    import torch
    from nexplain.data.images import load_image
    from nexplain.models.load import load_clip, load_model

    table = table_of(a, a.sample_images)
    loaded = load_model(R50)
    _, clip_pre, _ = load_clip(VIT)
    torch.set_num_threads(1)
    out = {}
    for name, tf in (("decode_r50", loaded.transform), ("decode_clip", clip_pre)):
        t0 = time.perf_counter()
        for p in table.paths:
            tf(load_image(p))
        out[name + "_s_per_img"] = (time.perf_counter() - t0) / len(table)
    torch.set_num_threads(2)
    m = loaded.module.to(memory_format=torch.channels_last)
    x = decoded(loaded.transform, table_of(a, a.forward_images)).contiguous(memory_format=torch.channels_last)
    best = {}
    with torch.inference_mode():
        m(x[:a.batch])  # warm-up (oneDNN primitives)
        for _ in range(a.repeats):  # per batch, best of `repeats` passes (a shared machine)
            for s in range(0, len(x), a.batch):
                t0 = time.perf_counter()
                m(x[s:s + a.batch])
                best[s] = min(best.get(s, float("inf")), time.perf_counter() - t0)
    t = sum(best.values())
    out.update(full_fwd_s_per_img=t / len(x), seconds=t + sum(out[k] for k in out) * len(table),
               measured=f"decode {len(table)} JPEGs x 2 transforms (1 thread); full forward {len(x)} images "
                        f"(best of {a.repeats} per batch)")
    return out


def stage_extract(a, layer: str) -> dict:
    import torch
    from nexplain.activations.activations import extract_activations, extract_batches
    from nexplain.activations.hooks import Trace
    from nexplain.models.load import load_model

    torch.set_num_threads(2)
    table = table_of(a, a.forward_images)
    loaded = load_model(R50)
    m = loaded.module.to(memory_format=torch.channels_last)
    x = decoded(loaded.transform, table)
    batches = [(x[s:s + a.batch], np.arange(s, min(s + a.batch, len(x)), dtype=np.int32))
               for s in range(0, len(x), a.batch)]
    with torch.inference_mode(), Trace(m, layer, stop=True):
        m(x[:a.batch].contiguous(memory_format=torch.channels_last))  # warm-up
    best = [float("inf")] * len(batches)   # per batch, best of `repeats` passes (a shared machine)
    outs = [None] * len(batches)
    for _ in range(a.repeats):
        with torch.inference_mode():
            for j, (b, _) in enumerate(batches):
                t0 = time.perf_counter()
                with Trace(m, layer, stop=True) as tr:
                    m(b.contiguous(memory_format=torch.channels_last))
                best[j] = min(best[j], time.perf_counter() - t0)
                outs[j] = tr.output.contiguous()
    t_fwd = sum(best)
    work = OUT / "tmp" / layer
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # the writing alone: extract_batches over the layer's real outputs through an identity module
    # named like the layer (hook, summary and maps Parquet; no forward pass)
    ident = torch.nn.Sequential(collections.OrderedDict([(layer, torch.nn.Identity())]))
    t_write = float("inf")
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        extract_batches(ident, layer, [(o, i) for o, (_, i) in zip(outs, batches)], len(x),
                        work / "w_summary.parquet", work / "w_maps.parquet")
        t_write = min(t_write, time.perf_counter() - t0)
    del outs
    t0 = time.perf_counter()
    meta = extract_activations(loaded, table, layer, work / "summary.parquet", work / "maps.parquet",
                               batch_size=a.batch, threads=2, progress=False)
    t_ext = time.perf_counter() - t0
    n = len(table)
    out = {"stopped_fwd_s_per_img": t_fwd / n, "write_s_per_img": t_write / n,
           "extract_s_per_img": t_ext / n, "n_units": meta["n_units"],
           "map_hw": meta["map_height"] * meta["map_width"],
           "maps_bytes_per_img": (work / "maps.parquet").stat().st_size / n,
           "summary_bytes_per_img": (work / "summary.parquet").stat().st_size / n,
           "seconds": t_ext, "measured": f"extract_activations end to end, {n} images (batch {a.batch}, "
                                         f"2 threads, 1 loader worker)"}
    shutil.rmtree(work, ignore_errors=True)
    return out


def stage_concepts(a) -> dict:
    from nexplain.data.broden import open_broden
    from nexplain.data.concepts import build_concept_tables

    work = OUT / "tmp" / "concepts"
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    ds = open_broden(sample_root(a))
    build_concept_tables(ds, work, progress=False)
    t = time.perf_counter() - t0
    import pyarrow.parquet as pq
    pairs = pq.read_metadata(work / "masks" / "index.parquet").num_rows
    shutil.rmtree(work, ignore_errors=True)
    return {"seconds": t, "s_per_img": t / len(ds), "pairs_per_img": pairs / len(ds), "n_concepts": len(ds.concepts),
            "measured": f"build_concept_tables, {len(ds)} images, {len(ds.concepts)} concepts"}


def stage_geometry(a) -> dict:
    from nexplain.compositional.store import open_store, save_geometry

    geo = OUT / "geometry.npz"
    t0 = time.perf_counter()
    save_geometry(STORE, geo)
    t_geo = time.perf_counter() - t0
    m_geo = mem()["VmHWM"]
    t0 = time.perf_counter()
    store, _ = open_store(STORE, geo)
    t_open = time.perf_counter() - t0
    return {"seconds": t_geo, "geometry_peak_mb": m_geo, "open_store_s": t_open, "n_images": store.n_images,
            "measured": f"save_geometry on the full store ({store.n_images:,} images, {store.n_concepts} concepts)"}


def stage_coex(a) -> dict:
    import bench_broden_scale as bbs
    from nexplain.compositional.store import open_store

    geo = OUT / "geometry.npz"
    store, _ = open_store(STORE, geo if geo.is_file() else None)
    kinds = json.loads((STORE / "concepts.json").read_text())["kinds"]
    jobs = []
    for g, n_units, d in ((7, a.coex_units, STORE / f"units_s{a.seed}"), (14, a.coex_units_l3, OUT / f"units14_s{a.seed}")):
        d.mkdir(parents=True, exist_ok=True)
        for u in range(n_units):
            path, desc = d / f"u{u}.npy", d / f"u{u}.txt"
            if not path.is_file():
                maps, text = bbs.make_unit(store, kinds, u, a.seed, g)
                np.save(path, maps)
                desc.write_text(text)
            jobs.append((g, (u, str(path), desc.read_text(), False)))
    bbs._init(store)  # one fresh SearchCache for all units, as a pipeline worker
    rows = []
    for g, job in jobs:
        r = bbs.explain_unit(job)
        rows.append({"g": g, "unit": r["unit"], "clustered_s": r["t_clustered"], "coex_s": r["t_coex"]})
        print(f"  coex: {g}x{g} unit {r['unit']}: clustered {r['t_clustered']:.1f} s, CoEx {r['t_coex']:.1f} s", flush=True)
    by = {g: [r for r in rows if r["g"] == g] for g in (7, 14)}
    mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
    return {"units": rows, "clustered_s_l4": mean([r["clustered_s"] for r in by[7]]),
            "coex_s_l4": mean([r["coex_s"] for r in by[7]]),
            "clustered_s_l3": mean([r["clustered_s"] for r in by[14]]) or mean([r["clustered_s"] for r in by[7]]),
            "coex_s_l3": mean([r["coex_s"] for r in by[14]]) or mean([r["coex_s"] for r in by[7]]),
            "seconds": sum(r["clustered_s"] + r["coex_s"] for r in rows),
            "seconds_clustered": sum(r["clustered_s"] for r in rows), "seconds_coex": sum(r["coex_s"] for r in rows),
            "measured": f"{len(by[7])} units 7x7 + {len(by[14])} units 14x14, clustered K=5 + CoEx, 1 process"}


def label_matrix(n_images: int) -> tuple[np.ndarray, list[str]]:
    """Image-level presence (N, C) float32 of the store's concepts, and their names."""
    import pyarrow.parquet as pq
    t = pq.read_table(STORE / "masks" / "index.parquet", columns=["concept", "image_id"])
    names = pq.read_table(STORE / "concepts.parquet", columns=["name"]).column("name").to_pylist()
    P = np.zeros((n_images, len(names)), np.float32)
    P[t.column("image_id").to_numpy(), t.column("concept").to_numpy()] = 1
    return P, names


def planted_units(P: np.ndarray, n_units: int, rng) -> tuple[np.ndarray, list]:
    """Units as non-negative combinations of 1-6 concepts (in >= 0.5% of images) plus noise."""
    ok = np.flatnonzero(P.mean(0) > 0.005)
    Q, planted = np.empty((len(P), n_units), np.float32), []
    for k in range(n_units):
        idx = rng.choice(ok, rng.integers(1, 7), replace=False)
        w = rng.uniform(0.5, 2.0, len(idx))
        q = P[:, idx] @ w + rng.normal(0, 0.3, len(P))
        Q[:, k] = np.maximum(q, 0) if k % 3 == 0 else q
        planted.append(list(zip(w, idx)))
    return Q, planted


def stage_linear(a) -> dict:
    import torch
    from nexplain.linear.linear import explain_units
    from nexplain.splits import make_splits, split_masks

    torch.set_num_threads(2)
    P, _ = label_matrix(a.images)
    Q, _ = planted_units(P, a.le_units, np.random.default_rng([a.seed, 5]))
    ids = np.arange(a.images)
    masks = split_masks(make_splits(ids, SPLIT, a.seed), ids)
    t0 = time.perf_counter()
    explain_units(P, Q[:, :1], masks)
    t1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    exps, keep, _ = explain_units(P, Q, masks)
    tn = time.perf_counter() - t0
    per_unit = max(tn - t1, 0.0) / max(a.le_units - 1, 1)
    return {"seconds": t1 + tn, "t_1_unit": t1, "t_n_units": tn, "per_unit_s": per_unit, "fixed_s": t1 - per_unit,
            "concepts_kept": int(keep.sum()), "mean_length": float(np.mean([len(e.concepts) for e in exps])),
            "measured": f"explain_units, {a.images:,} x {P.shape[1]:,} label matrix: 1 unit, then {a.le_units} units"}


def _rows(units, planted, names, rng):
    """9 explanation rows per unit, as `explanation_rows` builds them."""
    import pandas as pd
    out = []
    for u in units:
        terms = [(float(w), names[c]) for w, c in planted[u]]
        cs = [names[c] for _, c in planted[u]] + [names[int(c)] for c in rng.integers(len(names), size=3)]
        formula = f"({cs[0]} OR {cs[1]}) AND NOT {cs[2]}" if len(set(cs[:3])) == 3 else cs[0]
        rows = [("le_label", -1, terms, 0.1), ("le_vlm", -1, terms[:2], 0.0), ("netdissect", -1, [(1.0, cs[0])], 0.0),
                ("coex", -1, [(1.0, formula)], 0.0)]
        rows += [("clustered", k, [(1.0, f"{cs[k % len(cs)]} OR {cs[(k + 1) % len(cs)]}")], 0.0) for k in range(5)]
        out += [{"explainer": e, "unit": u, "cluster": k, "terms": t, "bias": b, "dead": False} for e, k, t, b in rows]
    return pd.DataFrame(out)


def stage_simulate_l4(a) -> dict:
    import torch
    from nexplain.linear.scoring import layer_ablations, score_rows
    from nexplain.linear.simulate import Simulator
    from nexplain.linear.tail import Tail
    from nexplain.models.load import load_model
    from nexplain.splits import make_splits, split_masks

    torch.set_num_threads(2)
    rng = np.random.default_rng([a.seed, 4])
    P, names = label_matrix(a.images)
    Qp, planted = planted_units(P, a.sim_units, rng)
    Q = np.maximum(rng.standard_normal((a.images, a.units_l4), dtype=np.float32), 0)  # pooled layer4 activations
    units = np.arange(a.sim_units)
    Q[:, units] = Qp
    ids = np.arange(a.images)
    masks = split_masks(make_splits(ids, SPLIT, a.seed), ids)
    sim = Simulator(P, names)
    tail = Tail(load_model(R50).module, "layer4")
    assert tail.linear is not None
    t0 = time.perf_counter()
    abl = layer_ablations(tail, ids, Q, None, None, 1.1, {"val": masks["val"], "test": masks["test"]})
    t_setup = time.perf_counter() - t0
    rows = _rows(units, planted, names, rng)
    t0 = time.perf_counter()
    score_rows(rows, sim, Q, masks, abl, ("norm",), None)
    t_norm = time.perf_counter() - t0
    t0 = time.perf_counter()
    sc = score_rows(rows, sim, Q, masks, abl, ("optim", "norm"), {"steps": a.sim_steps, "lr": 0.01})
    t_both = time.perf_counter() - t0
    per_step = max(t_both - t_norm, 0.0) / a.sim_steps
    per_unit = (t_norm + per_step * OPTIM_STEPS) / a.sim_units
    return {"seconds": t_setup + t_norm + t_both, "setup_s": t_setup, "norm_s": t_norm, "optim_per_step_s": per_step,
            "per_unit_s": per_unit, "rows": len(rows), "scored": int(sc["ablation_norm"].notna().sum()),
            "classes": 1000, "measured": f"layer_ablations + score_rows, {a.images:,} images, {a.sim_units} units x "
                                         f"{ROWS_PER_UNIT} rows, optim at {a.sim_steps} steps (scaled to {OPTIM_STEPS})"}


def stage_simulate_l3(a) -> dict:
    import torch
    from nexplain.linear.ablation import Ablation
    from nexplain.linear.scoring import score_rows
    from nexplain.linear.simulate import Simulator
    from nexplain.linear.tail import Tail
    from nexplain.models.load import load_model

    torch.set_num_threads(2)
    rng = np.random.default_rng([a.seed, 3])
    n_val, n_test = a.replay_val, a.replay_test
    n = n_val + n_test
    P, names = label_matrix(a.images)
    P = P[:n]
    _, planted = planted_units(P, a.sim_units, rng)
    maps = np.maximum(rng.standard_normal((n, a.units_l3, 14, 14), dtype=np.float32), 0)
    Q = maps.mean(axis=(2, 3))
    masks = {"train": np.zeros(n, bool), "val": np.arange(n) < n_val, "test": np.arange(n) >= n_val}
    tail = Tail(load_model(R50).module, "layer3")
    assert tail.linear is None
    t0 = time.perf_counter()
    abl = {s: Ablation(tail, maps[masks[s]], None, 1.1) for s in ("val", "test")}
    t_setup = time.perf_counter() - t0
    rows = _rows(np.arange(a.sim_units), planted, names, rng)
    t0 = time.perf_counter()
    sc = score_rows(rows, Simulator(P, names), Q, masks, abl, ("norm",), None, np.arange(a.sim_units))
    t_score = time.perf_counter() - t0
    n_val_full, n_test_full = round(SPLIT[1] * a.images), round(SPLIT[2] * a.images)
    return {"seconds": t_setup + t_score, "setup_s": t_setup, "score_s": t_score,
            "per_pass_s": t_score / (a.sim_units * (ROWS_PER_UNIT + 1) * n_test),
            "setup_full_s": t_setup * (n_val_full + n_test_full) / n,
            "per_unit_full_s": t_score / a.sim_units * n_test_full / n_test,
            "scored": int(sc["ablation_norm"].notna().sum()),
            "measured": f"Ablation (replayed tail) + score_rows (norm), {a.sim_units} units x {ROWS_PER_UNIT} rows "
                        f"on {n_test} test + {n_val} val images (x{n_test_full / n_test:.0f} to full)"}


def stage_pure(a) -> dict:
    import torch
    from nexplain.models.load import load_model
    from nexplain.pure.relevance import relevances

    torch.set_num_threads(2)
    loaded = load_model(R50)
    table = table_of(a, min(a.sample_images, a.pure_pairs))
    x = decoded(loaded.transform, table)
    rng = np.random.default_rng([a.seed, 7])
    pairs = np.column_stack([rng.integers(0, a.units_l4, a.pure_pairs), np.arange(a.pure_pairs) % len(x)])
    get = lambda b: x[torch.as_tensor(b)]  # noqa: E731  (the rule's decoded-image cache)
    t0 = time.perf_counter()
    relevances(loaded.module, get, pairs[:32], "layer4", EARLIER, 32, progress=False)  # warm-up batch
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    rel = relevances(loaded.module, get, pairs, "layer4", EARLIER, 32, progress=False)
    t = time.perf_counter() - t0
    return {"seconds": t, "warmup_s": t_warm, "per_pair_s": t / len(pairs), "channels": {k: v.shape[1] for k, v in rel.items()},
            "measured": f"relevances, {len(pairs)} (unit, image) pairs of layer4 -> layer1-3, batch 32 (after a warm-up batch)"}


def stage_vlm(a) -> dict:
    import torch
    from nexplain.models.load import load_clip
    from nexplain.vlm.vlm import image_embeddings

    torch.set_num_threads(2)
    model, pre, _ = load_clip(VIT)
    table = table_of(a, a.vlm_images)
    with torch.no_grad():
        model.encode_image(decoded(pre, table_of(a, 8)))  # warm-up
    t0 = time.perf_counter()
    ids, emb = image_embeddings(model, pre, table, 64, progress=False)
    t = time.perf_counter() - t0
    return {"seconds": t, "s_per_img": t / len(ids), "dim": int(emb.shape[1]),
            "measured": f"image_embeddings, open_clip ViT-B-32 (random weights), {len(ids)} images, batch 64, 2 threads"}


def stage_ref(a) -> dict:
    """Load probe: ResNet-50 full forward, 2 threads, channels_last, random 224 px batches of 16
    (best of 2 after a warm-up). Run in its own process before and after every stage."""
    import torch
    import torchvision
    torch.set_num_threads(2)
    m = torchvision.models.resnet50().eval().to(memory_format=torch.channels_last)
    x = torch.randn(16, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    best = float("inf")
    with torch.inference_mode():
        m(x)
        for _ in range(2):
            t0 = time.perf_counter()
            m(x)
            best = min(best, (time.perf_counter() - t0) / len(x))
    return {"seconds": best, "ref_fwd_s_per_img": best, "measured": "reference forward"}


# --------------------------------------------------------------------------- projection

def project(a, r: dict) -> list[dict]:
    """Rows: stage, measured part, seconds here, peak RSS, full size here, N-node seconds, basis."""
    N, U4, U3 = a.images, a.units_l4, a.units_l3
    W = a.node_cores - 1                               # loader workers on a node
    fw = r["forward"]
    gpu_vit = 1 / (a.gpu_r50 * a.gpu_vit_ratio)
    refs = {name: st.get("ref_fwd_s_per_img", fw["full_fwd_s_per_img"]) for name, st in r.items() if name in STAGES}
    quiet = min(refs.values())
    rows = []

    def kk(key):
        """Assumed GPU/CPU speed ratio for torch work timed in stage `key`: the public ResNet-50
        figure over the reference forward pass timed around that stage (same machine load)."""
        return a.gpu_r50 * refs[key]

    def add(stage, key, here_full, node_s, basis, jobs=1, group=None, here_s=None, measured=None):
        """node_s: seconds on one node for all the stage's jobs run one after another;
        `jobs` independent jobs spread over N nodes (at most `jobs` nodes help). Rows of one
        `group` are independent jobs (one per layer): on N >= 2 nodes they run side by side."""
        st = r[key]
        nodes = {n: (node_s(n) if callable(node_s) else node_s / min(n, jobs)) for n in (1, 4, 16)}
        rows.append({"stage": stage, "measured": measured or st["measured"],
                     "here_s": st["seconds"] if here_s is None else here_s,
                     "peak_rss_mb": max(st["mem"]["VmHWM"], st["mem"]["children_peak"]),
                     "full_here_s": here_full, "nodes_s": nodes, "basis": basis, "group": group,
                     "slowdown": refs[key] / quiet})

    ext_nodes = 0.0
    for layer, key, units in (("layer4", "extract_layer4", U4), ("layer3", "extract_layer3", U3)):
        e = r[key]
        write = e["write_s_per_img"]
        k = kk(key)
        node = N * (max(e["stopped_fwd_s_per_img"] / k, fw["decode_r50_s_per_img"] / W) + write)
        e["node_write_s_per_img"] = write
        ext_nodes += node
        add(f"activations {layer} (ResNet-50, 224 px)", key, N * e["extract_s_per_img"], node,
            f"GPU forward = this CPU's stopped forward ({e['stopped_fwd_s_per_img']:.3f} s/img) / {k:.0f}; decode "
            f"/ {W} workers; hooks + Parquet writing ({write * 1e3:.1f} ms/img, measured alone) stay serial "
            f"on the CPU; 1 job per layer", group="extract")
    c = r["concepts"]
    add("concept tables (build_concept_tables)", "concepts", N * c["s_per_img"], N * c["s_per_img"],
        "linear in images; one process, not sharded: nodes do not help")
    g = r["geometry"]
    add("geometry (save_geometry)", "geometry", g["seconds"], g["seconds"], "measured at full size; one process")
    cx = r["coex"]
    cpu = U4 * cx["clustered_s_l4"] + U3 * cx["clustered_s_l3"]
    add("Clustered CoEx K=5 (layer4 + layer3)", "coex", cpu / 2, lambda n: cpu / (a.node_cores * n),
        f"CPU s/unit ({cx['clustered_s_l4']:.1f} layer4, {cx['clustered_s_l3']:.1f} layer3) x units / cores "
        f"(perfect scaling; `explain.shards` spreads units over nodes)", here_s=cx["seconds_clustered"])
    cpu_c = U4 * cx["coex_s_l4"] + U3 * cx["coex_s_l3"]
    add("CoEx (layer4 + layer3)", "coex", cpu_c / 2, lambda n: cpu_c / (a.node_cores * n),
        f"CPU s/unit ({cx['coex_s_l4']:.2f} layer4, {cx['coex_s_l3']:.2f} layer3) x units / cores",
        here_s=cx["seconds_coex"], measured="the same units, CoEx part")
    le = r["linear"]
    jobs = [le["fixed_s"] + le["per_unit_s"] * u for u in (U4, U3)] * 2   # 2 layers x 2 sources
    add("LE (2 layers x 2 sources)", "linear", sum(jobs), lambda n: max(jobs),
        f"per job: {le['fixed_s']:.1f} s + {le['per_unit_s'] * 1e3:.1f} ms/unit; 4 jobs, one at a time here; "
        f"on a node the 4 run side by side (2 threads each)")
    s4 = r["simulate_l4"]
    k = kk("simulate_l4")
    t4 = s4["setup_s"] + U4 * s4["per_unit_s"]
    s3 = r["simulate_l3"]
    t3 = s3["setup_full_s"] + a.replay_units * s3["per_unit_full_s"]
    t3_all = s3["setup_full_s"] + U3 * s3["per_unit_full_s"]
    r["sim3_all"] = t3_all
    k4 = k
    add(f"simulate layer4 (linear tail, optim + norm, {U4} units)", "simulate_l4", t4,
        lambda n: (s4["setup_s"] + U4 * s4["per_unit_s"] / n) / k4,
        f"{s4['per_unit_s']:.1f} s/unit here ({ROWS_PER_UNIT} rows, 1,000 classes, {OPTIM_STEPS} Adam steps); "
        f"GPU = CPU / {k:.0f} (assumed); units in one shard per node (`compute.stages.simulate.shards`), "
        f"each shard repeats the setup")
    k = kk("simulate_l3")
    k3 = k
    add(f"simulate layer3 (tail replay, norm, units 0-{a.replay_units - 1})", "simulate_l3", t3,
        lambda n: (s3["setup_full_s"] + a.replay_units * s3["per_unit_full_s"] / n) / k3,
        f"{s3['per_pass_s'] * 1e3:.0f} ms per (unit, image) tail pass, {ROWS_PER_UNIT + 1} passes per test image and "
        f"unit; all {U3} units: {hms(t3_all)} here, {hms(t3_all / k)} on a GPU; sharded by units as layer4")
    p = r["pure"]
    k = kk("pure")
    pairs = U4 * PURE_TOP
    dec = min(pairs, N) * fw["decode_r50_s_per_img"]
    kp = k
    add(f"PURE relevances (layer4, {pairs:,} pairs)", "pure", dec + pairs * p["per_pair_s"],
        lambda n: (dec + pairs * p["per_pair_s"] / kp) / n,
        f"{p['per_pair_s']:.2f} s/pair here; GPU = CPU / {k:.0f} (forward ratio assumed for forward + backward); "
        f"+ serial decode of up to {min(pairs, N):,} distinct images ({hms(dec)}); one shard per node "
        f"(`compute.stages.relevance.shards`)")
    v = r["vlm"]
    vnode = N * max(gpu_vit, fw["decode_clip_s_per_img"] / W)
    add("VLM image embeddings (ViT-B-32 size, 2 VLMs)", "vlm", 2 * N * v["s_per_img"], 2 * vnode,
        f"GPU {a.gpu_r50 * a.gpu_vit_ratio:,.0f} img/s (assumed: ResNet-50 figure x {a.gpu_vit_ratio}); "
        f"decode / {W} workers; 1 job per VLM", jobs=2)
    def stage_sum(n):
        solo = sum(x["nodes_s"][n] for x in rows if x["group"] is None)
        groups = {x["group"] for x in rows} - {None}
        both = [[x["nodes_s"][n] for x in rows if x["group"] == g_] for g_ in groups]
        return solo + sum(sum(b) if n == 1 else max(b) for b in both)

    total = {"stage": "**sum of stages**", "measured": "", "here_s": sum(x["here_s"] for x in rows),
             "peak_rss_mb": max(x["peak_rss_mb"] for x in rows), "full_here_s": sum(x["full_here_s"] for x in rows),
             "nodes_s": {n: stage_sum(n) for n in (1, 4, 16)}, "group": None, "slowdown": None,
             "basis": "stages one after another; on >= 2 nodes the layer3 and layer4 jobs of a stage side by side"}
    rows.append(total)
    r["ratio_gpu_cpu"] = {key: kk(key) for key in refs}
    r["ref_quietest_s_per_img"] = quiet
    e3, e4 = r["extract_layer3"], r["extract_layer4"]
    n_val, n_test = round(SPLIT[1] * N), round(SPLIT[2] * N)
    r["full_size_gb"] = {  # what the stages hold at 63,305 images (computed, not measured)
        "extract_layer4_maps_parquet_disk": N * e4["maps_bytes_per_img"] / 1e9,
        "extract_layer3_maps_parquet_disk": N * e3["maps_bytes_per_img"] / 1e9,
        "pure_read_peaks_layer4_ram": N * e4["n_units"] * 4 / 1e9,  # each unit's max per image (read_peaks)
        "pure_decoded_image_cache_ram_max": min(U4 * PURE_TOP, N) * 3 * 224 * 224 * 4 / 1e9,
        "simulate_layer3_val_test_maps_ram": (n_val + n_test) * e3["n_units"] * e3["map_hw"] * 4 / 1e9,
    }
    return rows


def hms(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def markdown(rows) -> str:
    out = ["| stage | measured here | s here | load | peak RSS (MB) | full size, here | 1 node | 4 nodes | 16 nodes |",
           "|---|---|---|---|---|---|---|---|---|"]
    for x in rows:
        n = x["nodes_s"]
        load = "" if x["slowdown"] is None else f"{x['slowdown']:.1f}x"
        out.append(f"| {x['stage']} | {x['measured']} | {x['here_s']:.1f} | {load} | {x['peak_rss_mb']:,.0f} | "
                   f"{hms(x['full_here_s'])} | {hms(n[1])} | {hms(n[4])} | {hms(n[16])} |")
    out.append("")
    out += [f"- {x['stage']}: {x['basis']}" for x in rows]
    return "\n".join(out)


# --------------------------------------------------------------------------- main

def run_stage(a, name: str) -> dict:
    fn = {"extract_layer4": lambda: stage_extract(a, "layer4"), "extract_layer3": lambda: stage_extract(a, "layer3")}
    fn = fn.get(name) or (lambda: globals()[f"stage_{name}"](a))
    l0 = load()
    t0 = time.perf_counter()
    out = fn()
    out["wall_s"] = time.perf_counter() - t0
    out["mem"] = mem()
    out["load_avg"] = [l0, load()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=63305, help="full probe-set size (the store's images)")
    ap.add_argument("--concepts", type=int, default=1200)
    ap.add_argument("--units-l4", type=int, default=2048)
    ap.add_argument("--units-l3", type=int, default=1024)
    ap.add_argument("--sample-images", type=int, default=512, help="generated Broden-format images (decode, concepts)")
    ap.add_argument("--forward-images", type=int, default=128, help="images through each extraction")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="passes of the forward / pre-decoded timings (best kept)")
    ap.add_argument("--coex-units", type=int, default=3, help="7x7 (layer4-like) units")
    ap.add_argument("--coex-units-l3", type=int, default=1, help="14x14 (layer3-like) units")
    ap.add_argument("--le-units", type=int, default=2048)
    ap.add_argument("--sim-units", type=int, default=1)
    ap.add_argument("--sim-steps", type=int, default=3, help="Adam steps timed (scaled to 100)")
    ap.add_argument("--replay-val", type=int, default=16)
    ap.add_argument("--replay-test", type=int, default=48)
    ap.add_argument("--replay-units", type=int, default=16, help="config simulate.replay.units (0-15)")
    ap.add_argument("--pure-pairs", type=int, default=64)
    ap.add_argument("--vlm-images", type=int, default=128)
    ap.add_argument("--gpu-r50", type=float, default=3229.0,
                    help="ASSUMED GPU ResNet-50 inference img/s (NVIDIA DeepLearningExamples, A100 40GB, AMP, batch 256)")
    ap.add_argument("--gpu-vit-ratio", type=float, default=2.05,
                    help="ASSUMED ViT-B/32 : ResNet-50 GPU throughput (timm RTX 4090 AMP NHWC: 10,426 / 5,088)")
    ap.add_argument("--node-cores", type=int, default=16)
    ap.add_argument("--stages", default="all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage", help=argparse.SUPPRESS)   # internal: run one stage in this process
    a = ap.parse_args()
    sdir = OUT / "stages"
    if a.stage:
        res = run_stage(a, a.stage)
        (sdir / f"{a.stage}.json").write_text(json.dumps(res, indent=1, default=float))
        return
    t_start = time.perf_counter()
    sdir.mkdir(parents=True, exist_ok=True)
    if not (STORE / "concepts.json").is_file() or \
            json.loads((STORE / "concepts.json").read_text())["params"] != [a.images, 112, a.concepts, 3000, a.seed]:
        import bench_broden_scale as bbs
        print("building the Broden-size store (bench_broden_scale.build_store) ...", flush=True)
        bbs.build_store(STORE, a.images, 112, a.concepts, 3000, a.seed)
        (STORE / "geometry.npz").unlink(missing_ok=True)
    root = sample_root(a)
    if not (root / "sample.json").is_file():
        t0 = time.perf_counter()
        make_sample(root, a.sample_images, a.concepts, a.seed)
        print(f"sample: {a.sample_images} Broden-format images in {time.perf_counter() - t0:.0f} s (not timed)", flush=True)
    todo = STAGES if a.stages == "all" else [x for x in a.stages.split(",") if x]   # "": only the projection
    argv = [x for x in sys.argv[1:]]

    def ref() -> float:
        subprocess.run([sys.executable, __file__, *argv, "--stage", "ref"], check=True)
        return json.loads((sdir / "ref.json").read_text())["ref_fwd_s_per_img"]

    before = ref() if todo else None
    for name in todo:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, *argv, "--stage", name], check=True)
        after = ref()
        res = json.loads((sdir / f"{name}.json").read_text())
        res["ref_around"] = [before, after]
        res["ref_fwd_s_per_img"] = (before + after) / 2
        res["run"] = {"command": "python benchmarks/bench_scale.py " + " ".join(argv), "at": time.strftime("%Y-%m-%d %H:%M")}
        (sdir / f"{name}.json").write_text(json.dumps(res, indent=1, default=float))
        print(f"{name}: {res['seconds']:.1f} s measured ({time.perf_counter() - t0:.0f} s with setup and probes), "
              f"peak RSS {res['mem']['VmHWM']:,.0f} MB, load {res['load_avg'][0]:.1f}-{res['load_avg'][1]:.1f}, "
              f"reference forward {before:.3f} / {after:.3f} s/img", flush=True)
        before = after
    r = {name: json.loads((sdir / f"{name}.json").read_text()) for name in STAGES if (sdir / f"{name}.json").is_file()}
    missing = [s for s in STAGES if s not in r]
    if missing:
        print(f"no figures yet for {missing}: run them to get the projection")
        return
    rows = project(a, r)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    result = {"date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/bench_scale.py " + " ".join(argv),
              "machine": {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()},
              "args": {k: v for k, v in vars(a).items() if k != "stage"},
              "assumptions": {"gpu_r50_img_s": a.gpu_r50, "gpu_vit_ratio": a.gpu_vit_ratio,
                              "gpu_cpu_ratio": r["ratio_gpu_cpu"], "node_cores": a.node_cores},
              "stages": r, "table": rows, "wall_s": time.perf_counter() - t_start,
              "stage_runs": sorted({json.dumps(st.get("run")) for st in r.values() if isinstance(st, dict) and st.get("run")})}
    (OUT / "bench_scale.json").write_text(json.dumps(result, indent=1, default=float))
    md = markdown(rows)
    (OUT / "table.md").write_text(md + "\n\nfull size, computed (GB): " + ", ".join(
        f"{k} {v:.1f}" for k, v in r["full_size_gb"].items()) + "\n")
    print(md)
    print("\nfull size, computed (GB): " + ", ".join(f"{k} {v:.1f}" for k, v in r["full_size_gb"].items()))
    print(f"\nreference forward: quietest {r['ref_quietest_s_per_img']:.3f} s/img "
          f"({1 / r['ref_quietest_s_per_img']:.1f} img/s); GPU/CPU ratios assumed per stage: "
          + ", ".join(f"{key} {v:.0f}" for key, v in r["ratio_gpu_cpu"].items())
          + f"; script wall {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
