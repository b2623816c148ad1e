"""The score report of one layer: summary table (Parquet + DVC metrics JSON), per-unit table, figures."""
import json

from nexplain.io import write_text
from nexplain.report import metrics_json, summary_table, unit_table
from nexplain.report_figures import corr_vs_ablation, method_bars, top_impact_curve
from nexplain.runner import run_rule
from nexplain.tables import read_table, write_table
from nexplain.tracking import Outcome


def main(snakemake):
    p, w, inp, out = snakemake.params, snakemake.wildcards, snakemake.input, snakemake.output
    formulas = {n: read_table(f, "explanation table") for n, f in zip(p.formulas, inp.formulas)}
    linear = {n: read_table(f, "explanation table") for n, f in zip(p.linear, inp.linear)}
    sims = {n: read_table(f, "simulation table") for n, f in zip(p.simulators, inp.simulations)}
    ti = read_table(inp.top_impact, "Top Impact table")
    pure = read_table(inp.pure, "PURE summary") if "pure" in inp.keys() else None
    table = summary_table(formulas, linear, sims, ti, pure)
    meta = {"model": w.model, "dataset": w.dataset, "layer": w.layer, "simulators": list(p.simulators)}
    write_table(table, out.table, meta)
    metrics = metrics_json(table)
    write_text(out.metrics, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    first = p.simulators[0]
    write_table(unit_table(formulas, linear, sims[first], ti), out.units, {**meta, "simulator": first})
    method_bars(out.methods, table, w.layer)
    corr_vs_ablation(out.scatter, sims[first], w.layer, first)
    top_impact_curve(out.top_impact, ti, w.layer)
    figures = [out.methods, out.scatter, out.top_impact]
    return Outcome(metrics=metrics, artifacts=[out.table, out.units, *figures])


run_rule(snakemake, main)
