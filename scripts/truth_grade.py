"""Grade every method on the planted units against the planted truth; the report's table and figure."""
import json

import numpy as np

from nexplain.compositional.store import open_store
from nexplain.io import write_text
from nexplain.data.folder import open_dataset
from nexplain.linear.conceptmatrix import read_aligned
from nexplain.runner import run_rule
from nexplain.tables import read_table, write_table
from nexplain.tracking.tracking import Outcome
from nexplain.truth.grade import summarise
from nexplain.truth.planted import parse_units
from nexplain.truth.report import metrics_json, truth_figure, truth_html
from nexplain.truth.study import grade_variants, split_masks


def _variant(maps_path, explained, seconds_path):
    with np.load(maps_path) as z:
        maps = {k: z[k] for k in z.files}
    tables = {m: read_table(f"{explained}/{m}.parquet", "truth explanation table") for m in _methods(explained)}
    return maps, tables, read_table(seconds_path, "truth seconds")


def _methods(explained):
    import os

    return sorted(f[:-len(".parquet")] for f in os.listdir(explained) if f.endswith(".parquet"))


def main(snakemake):
    p, inp, out = snakemake.params, snakemake.input, snakemake.output
    store, names = open_store(inp.concepts, inp.geometry)
    units = parse_units(p.units, names)
    ids = np.arange(store.n_images)
    splits = split_masks(open_dataset(p.reader, inp.root), len(ids))
    matrices = {s: read_aligned(path, ids) for s, path in zip(p.sources, inp.matrices)}
    variants = {v: _variant(m, e, s) for v, m, e, s in zip(p.variants, inp.maps, inp.explained, inp.seconds)}
    grades, planting = grade_variants(units, store, names, splits, matrices, variants, p.pure)
    summary = summarise(grades)
    accuracy = {name: json.loads(open(path).read())["test_accuracy"]
                for name, path in (("planted", inp.planted_metrics), ("base", inp.base_metrics))}
    write_table(grades.drop(columns="seconds"), out.grades, {"units": len(units)})  # timings apart: same bytes
    write_table(planting, out.planting, {"units": len(units)})
    write_table(summary, out.summary, {"units": len(units)})
    metrics = metrics_json(summary, planting, accuracy)
    write_text(out.metrics, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    write_text(out.table, truth_html(summary, planting, grades, accuracy))
    truth_figure(out.figure, summary)
    return Outcome(metrics=metrics, artifacts=[out.summary, out.figure, out.table])


run_rule(snakemake, main)
