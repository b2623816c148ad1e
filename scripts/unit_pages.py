"""Static HTML pages of one layer's score report: index.html and unit_<u>.html per unit of `report.units`."""
from nexplain.parent_run import log_parent_artifacts
from nexplain.runner import run_rule
from nexplain.tables import read_table
from nexplain.tracking import Outcome
from nexplain.unit_pages import write_pages
from nexplain.units import select_units


def main(snakemake):
    p, w, inp, out = snakemake.params, snakemake.wildcards, snakemake.input, snakemake.output
    units = read_table(inp.units, "per-unit report table")
    n_units = int(units["unit"].max()) + 1
    layer_figures = {"Test correlation per explainer": inp.methods, "Correlation against ablation": inp.scatter,
                     "Top Impact": inp.top_impact}
    pages = write_pages(out.pages, units, read_table(inp.scores, "score table"), select_units(p.units, n_units),
                        {"formulas": list(p.formulas), "linear": list(p.linear)}, p.simulator, inp.figures,
                        layer_figures, inp.pure if "pure" in inp.keys() else None,
                        title=f"{w.model} / {w.dataset} / {w.layer}", source=inp.units)
    log_parent_artifacts(f"report/{w.model}/{w.dataset}/{w.layer}", [out.pages])
    return Outcome(metrics={"pages": len(pages)})


run_rule(snakemake, main)
