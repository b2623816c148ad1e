"""Explain every unit of a layer with NetDissect, CoEx or Clustered CoEx; one Parquet table.

One row per unit (netdissect, coex) or per unit and cluster range (clustered): the
formula, its concept ids, the range, every docs/methods.md metric and the search's visited
count. Units run in parallel worker processes; per-unit seconds go to a separate timing
table, because the explanation table must be the same bytes on every run.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from nexplain import tables
from nexplain.activations.read import read_meta, read_unit_maps
from nexplain.compositional import bitmaps, exact, formulas, search
from nexplain.compositional.atoms import atoms_of
from nexplain.compositional.masks import Bitmap
from nexplain.compositional.metrics import formula_metrics
from nexplain.compositional.store import open_store
from nexplain.errors import ConfigError, DataError
from nexplain.units import select_units

log = logging.getLogger(__name__)

METHODS = ("netdissect", "coex", "clustered")
SEARCHES = ("mmesh", "beam", "exact")
METRICS = ("iou", "detection_accuracy", "activation_coverage", "sample_coverage", "explanation_coverage")

SCHEMA = pa.schema([
    ("unit", pa.int32()), ("cluster", pa.int16()), ("status", pa.string()),
    ("lo", pa.float64()), ("hi", pa.float64()), ("n_cells", pa.int64()),
    ("formula", pa.string()), ("concept_ids", pa.list_(pa.int32())), ("length", pa.int8()),
    *[(m, pa.float64()) for m in METRICS], ("score", pa.float64()),
    ("visited", pa.int32()), ("visited_compound", pa.int32()),
    # search: exact only (else null): the beam's IoU, the optimum's gain over it, and the
    # largest bound of a pruned subtree (below the optimum's score: the proof)
    ("beam_iou", pa.float64()), ("gap", pa.float64()), ("pruned_bound", pa.float64()),
])


@dataclass(frozen=True)
class Settings:
    """What a method needs; every field comes from the rule's params."""

    method: str
    quantile: float = bitmaps.TOP_QUANTILE
    length: int = 3
    beam: int = 5
    start_beam: int | None = None
    penalty: float | None = None
    search: str = "mmesh"             # mmesh | beam (the exhaustive beam, for comparison) | exact
    k: int = 5
    ranges: str = "tile"              # tile | strict
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown explanation method '{self.method}'; valid choices: {', '.join(METHODS)}")
        if self.search not in SEARCHES:
            raise ConfigError(f"unknown search '{self.search}'; valid choices: {', '.join(SEARCHES)}")
        if self.ranges not in bitmaps.MODES:
            raise ConfigError(f"unknown ranges '{self.ranges}'; valid choices: {', '.join(bitmaps.MODES)}")


# Worker state, set once per process (fork shares the store's arrays and memory maps).
_W: dict = {}


def _init_worker(maps_path, store, names, settings):
    import torch

    torch.set_num_threads(1)
    _W.update(maps=maps_path, store=store, names=names, s=settings, cache=search.default_cache(store))


def _search(A: Bitmap, s: Settings, store, cache, start_beam=None, pair_counts=None, atom_counts=None):
    """(result, the beam's result when the search is exact, else None)."""
    if s.method == "netdissect":
        return search.netdissect(A, store, cache=cache, pair_counts=pair_counts), None
    fn = search.beam_search if s.search == "beam" else search.mmesh_search
    beam = fn(A, store, length=s.length, beam=s.beam, start_beam=start_beam, penalty=s.penalty, cache=cache,
              pair_counts=pair_counts)
    if s.search != "exact":
        return beam, None
    best = exact.exact_search(A, store, length=s.length, penalty=s.penalty,
                              incumbent=beam.beam[0] if beam.beam else None, counts=atom_counts)
    return best, beam


def _row(unit, cluster, lo, hi, A: Bitmap, found, store, names, status=None) -> dict:
    result, beam = found if found is not None else (None, None)
    row = {"unit": unit, "cluster": cluster, "lo": lo, "hi": hi, "n_cells": A.count() if A is not None else 0,
           "formula": None, "concept_ids": [], "length": 0, **{m: 0.0 for m in METRICS}, "score": 0.0,
           "visited": 0, "visited_compound": 0, "beam_iou": None, "gap": None, "pruned_bound": None}
    if result is not None:
        row.update(visited=result.visited, visited_compound=result.visited_compound)
    if beam is not None:
        row.update(beam_iou=beam.iou, gap=result.iou - beam.iou, pruned_bound=result.proof.max_pruned)
    if status is None and (result is None or result.formula is None):
        status = "unexplained"  # cells, but no concept touches them
    if status is not None:
        return {**row, "status": status}
    f = result.formula
    m = formula_metrics(A, f, store)
    return {**row, "status": "ok", "formula": formulas.to_str(f, names),
            "concept_ids": list(formulas.concepts(f)), "length": len(f),
            **{k: float(m[k]) for k in METRICS}, "score": float(result.score)}


def explain_maps(unit: int, ids: np.ndarray, maps: np.ndarray, store, names: list[str], s: Settings,
                 cache=None) -> list[dict]:
    """Rows of one unit (table SCHEMA) from its maps (n, h, w) on images `ids` of `store`."""
    cache = cache or search.default_cache(store)
    args = (ids, maps, store.n_images, store.shape)
    if s.method == "clustered":
        ranges, info = bitmaps.fit_clusters(maps.ravel(), k=s.k, mode=s.ranges, seed=s.seed)
        if info["dead"]:
            return [_row(unit, -1, np.nan, np.nan, None, None, store, names, "dead")]
        rows, bms = [], bitmaps.cluster_bitmaps(*args, ranges)
        counts = store.pair_counts_many(bms)  # one read of the concept rows for all K ranges
        atom_counts = atoms_of(store).count_many(bms) if s.search == "exact" else [None] * len(bms)
        for j, (r, A) in enumerate(zip(ranges, bms)):
            if A.count() == 0:
                rows.append(_row(unit, j, r.lo, r.hi, A, None, store, names, "empty"))
            else:
                found = _search(A, s, store, cache, s.start_beam, counts[j], atom_counts[j])
                rows.append(_row(unit, j, r.lo, r.hi, A, found, store, names))
        return rows
    A, info = bitmaps.top_bitmap(*args, q=s.quantile)
    hi = float(maps.max()) if maps.size else np.nan
    if info["dead"] or A.count() == 0:  # constant, or never above its threshold
        return [_row(unit, -1, info["threshold"], hi, A, None, store, names, "dead")]
    return [_row(unit, 0, info["threshold"], hi, A, _search(A, s, store, cache), store, names)]


def explain_unit(unit: int) -> tuple[list[dict], float]:
    """Rows of one unit of the worker's layer, and the seconds they took."""
    t0 = time.perf_counter()
    ids, maps = read_unit_maps(_W["maps"], unit)
    rows = explain_maps(unit, ids, maps, _W["store"], _W["names"], _W["s"], _W["cache"])
    return rows, time.perf_counter() - t0


def explain_layer(maps_path, concepts_dir, settings: Settings, units=None, shard=(0, 1),
                  workers: int = 1, progress: bool = True, geometry=None) -> tuple[pa.Table, pa.Table]:
    """(explanations, timings) of the selected units of one layer."""
    meta = read_meta(maps_path)
    store, names = open_store(concepts_dir, geometry)
    if meta["n_images"] != store.n_images:
        raise DataError(f"{maps_path} covers {meta['n_images']} images but the concept masks in "
                        f"{concepts_dir} cover {store.n_images}: extract activations on the same dataset")
    selected = select_units(units, meta["n_units"], shard)
    log.info("%s: %d units of %s, %d workers", settings.method, len(selected), maps_path, workers)
    if settings.search == "exact" and settings.method != "netdissect":
        atoms_of(store)  # built once, before the workers fork: they share it
    init = (str(maps_path), store, names, settings)
    rows, timing = [], []
    bar = tqdm(total=len(selected), disable=not progress, desc=settings.method, unit="unit")
    if workers > 1:
        with mp.get_context("fork").Pool(workers, _init_worker, init) as pool:
            results = pool.imap(explain_unit, selected.tolist())
            for unit, (r, sec) in zip(selected.tolist(), results):
                rows += r
                timing.append((unit, sec))
                bar.update()
    else:
        _init_worker(*init)
        for unit in selected.tolist():
            r, sec = explain_unit(unit)
            rows += r
            timing.append((unit, sec))
            bar.update()
    bar.close()
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    timings = pa.table({"unit": pa.array([u for u, _ in timing], pa.int32()),
                        "seconds": pa.array([t for _, t in timing], pa.float64())})
    return table, timings


def summary_metrics(table: pa.Table, seconds: pa.Table) -> dict[str, float]:
    """Run-level figures of an explanation table, for MLflow."""
    df, sec = table.to_pandas(), seconds.column("seconds").to_numpy()
    ok = df[df["status"] == "ok"]
    return {"units": len(sec), "rows": len(df), "rows_ok": len(ok), "dead_units": int((df["status"] == "dead").sum()),
            "mean_iou": float(ok["iou"].mean()) if len(ok) else 0.0,
            "median_visited": float(ok["visited"].median()) if len(ok) else 0.0,
            "median_seconds_per_unit": float(np.median(sec)) if len(sec) else 0.0}


write_table = tables.write_table


def read_table(path) -> pd.DataFrame:
    return tables.read_table(path, "explanation table")


def merge_tables(paths) -> pa.Table:
    """Shards of one layer and method, as one table sorted by (unit, cluster)."""
    table = pa.concat_tables([pq.read_table(p).replace_schema_metadata(None) for p in paths])
    return table.sort_by([("unit", "ascending"), ("cluster", "ascending")])
