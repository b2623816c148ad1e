"""The score report of one layer: summary table (Parquet + DVC metrics JSON), per-unit table, figures."""
import json
import os

import pandas as pd

from nexplain.activations.read import read_summary, read_unit_maps
from nexplain.compositional.store import open_store
from nexplain.data.folder import open_dataset
from nexplain.io import write_text
from nexplain.linear.conceptmatrix import read_aligned
from nexplain.report.range_figures import ranges_figure, top_figure
from nexplain.report.neuroneval import unit_scores
from nexplain.report.report import metrics_json, summary_table, unit_table
from nexplain.report.report_figures import area_chart, corr_vs_ablation, linear_weights, method_bars, top_impact_curve
from nexplain.runner import run_rule
from nexplain.splits import split_masks
from nexplain.tables import read_table, write_table
from nexplain.tracking.parent_run import log_parent_artifacts
from nexplain.tracking.tracking import Outcome
from nexplain.units import select_units


def _alive(table, u) -> bool:
    """The unit was explained (not dead, not outside the method's `explain.units`)."""
    return bool((table.loc[table["unit"] == u, "status"] != "dead").any())


def _neuroneval(formulas, linear, inp, sources):
    """Every explained unit's NeuronEval metrics against its own image-level activation."""
    ids, Q, _ = read_summary(inp.summary)
    splits = split_masks(pd.read_parquet(inp.splits), ids)
    store, names = open_store(inp.concepts) if "concepts" in inp.keys() else (None, None)
    matrices = {s: read_aligned(path, ids) for s, path in zip(sources, inp.matrices)}
    return unit_scores(formulas, linear, ids, Q, splits, store, names, matrices)


def main(snakemake):
    p, w, inp, out = snakemake.params, snakemake.wildcards, snakemake.input, snakemake.output
    formulas = {n: read_table(f, "explanation table") for n, f in zip(p.formulas, inp.formulas)}
    linear = {n: read_table(f, "explanation table") for n, f in zip(p.linear, inp.linear)}
    sims = {n: read_table(f, "simulation table") for n, f in zip(p.simulators, inp.simulations)}
    ti = read_table(inp.top_impact, "Top Impact table")
    pure = read_table(inp.pure, "PURE summary") if "pure" in inp.keys() else None
    causal = {k: read_table(getattr(inp, k), f"causal {k} table") if k in inp.keys() else None
              for k in ("efficacy", "paste")}
    spec = None
    if "specialization" in inp.keys():
        spec = read_table(inp.specialization, "specialization table")
        spec = spec[spec["layer"] == w.layer]
    table = summary_table(formulas, linear, sims, ti, pure, _neuroneval(formulas, linear, inp, p.sources), **causal,
                          specialization=spec)
    meta = {"model": w.model, "dataset": w.dataset, "layer": w.layer, "simulators": list(p.simulators)}
    write_table(table, out.table, meta)
    metrics = metrics_json(table)
    write_text(out.metrics, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    first = p.simulators[0]
    write_table(unit_table(formulas, linear, sims[first], ti, efficacy=causal["efficacy"]), out.units,
                {**meta, "simulator": first})
    method_bars(out.methods, table, w.layer)
    corr_vs_ablation(out.scatter, sims[first], w.layer, first)
    top_impact_curve(out.top_impact, ti, w.layer)
    figures = [out.methods, out.scatter, out.top_impact]
    areas = read_table(inp.area_chart, "area chart table")
    os.makedirs(out.unit_figures, exist_ok=True)
    paths = open_dataset(p.reader, inp.root).paths
    for u in select_units(p.units, int(areas["unit"].max()) + 1):
        area_chart(f"{out.unit_figures}/area_{u:04d}.png", areas[areas["unit"] == u], int(u))
        rows = {n: t.set_index("unit").loc[u] for n, t in linear.items()}
        live = {n: r for n, r in rows.items() if not r["dead"]}
        if live:
            linear_weights(f"{out.unit_figures}/le_{u:04d}.png", live, int(u))
        ids, maps = read_unit_maps(inp.maps, int(u))
        if "clustered" in formulas and _alive(formulas["clustered"], u):
            ranges_figure(f"{out.unit_figures}/ranges_{u:04d}.png", formulas["clustered"], int(u), ids, maps, paths)
        single = {n: t for n, t in formulas.items() if n != "clustered" and _alive(t, u)}
        if single:
            top_figure(f"{out.unit_figures}/top_{u:04d}.png", single, int(u), ids, maps, paths)
    log_parent_artifacts(f"report/{w.model}/{w.dataset}/{w.layer}",
                         [out.table, out.metrics, out.units, *figures, out.unit_figures])
    return Outcome(metrics=metrics, artifacts=[out.table, out.units, *figures])


run_rule(snakemake, main)
