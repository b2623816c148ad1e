"""Static HTML pages of one layer's score report: a sortable index and unit_<u>.html for every unit,
with its top images outlined; the units of `report.units` also get the report's figures."""
from tqdm import tqdm

from nexplain.activations.read import read_unit_maps
from nexplain.data.folder import open_dataset
from nexplain.report.unit_pages import write_pages
from nexplain.report.unit_strips import top_strip
from nexplain.runner import run_rule
from nexplain.tables import read_table
from nexplain.tracking.parent_run import log_parent_artifacts
from nexplain.tracking.tracking import Outcome
from nexplain.units import select_units


def main(snakemake):
    p, w, inp, out = snakemake.params, snakemake.wildcards, snakemake.input, snakemake.output
    units = read_table(inp.units, "per-unit report table")
    n_units = int(units["unit"].max()) + 1
    layer_figures = {"Test correlation per explainer": inp.methods, "Correlation against ablation": inp.scatter,
                     "Top Impact": inp.top_impact}
    paths = open_dataset(p.reader, inp.root).paths
    strips = {}
    for u in tqdm(units["unit"].tolist(), desc="top images", unit="unit"):
        strips[int(u)] = top_strip(*read_unit_maps(inp.maps, int(u)), paths, q=p.quantile)
    pages = write_pages(out.pages, units, read_table(inp.scores, "score table"), select_units(p.units, n_units),
                        {"formulas": list(p.formulas), "linear": list(p.linear)}, p.simulator, inp.figures,
                        layer_figures, inp.pure if "pure" in inp.keys() else None,
                        title=f"{w.model} / {w.dataset} / {w.layer}", source=inp.units, strips=strips)
    log_parent_artifacts(f"report/{w.model}/{w.dataset}/{w.layer}", [out.pages])
    return Outcome(metrics={"pages": len(pages)})


run_rule(snakemake, main)
