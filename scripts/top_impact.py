"""Top Impact of every unit of one layer, with the curve for the report."""
import numpy as np
import torch

from nexplain.activations import read_summary
from nexplain.compute import Compute
from nexplain.data.folder import open_dataset
from nexplain.impact import impacts, plot_top_impact, top_impact_table
from nexplain.models.load import load_model
from nexplain.models.manifest import read_manifest
from nexplain.runner import run_rule
from nexplain.scoring import layer_ablations
from nexplain.tables import write_table
from nexplain.tail import Tail
from nexplain.tracking import Outcome
from nexplain.units import select_units


def main(snakemake):
    p, w, inp = snakemake.params, snakemake.wildcards, snakemake.input
    torch.set_num_threads(p.threads)
    ids, Q, _ = read_summary(inp.summary)
    tail = Tail(load_model(read_manifest(inp.manifest)["spec"]).module, w.layer)
    ab = layer_ablations(tail, ids, Q, inp.maps, open_dataset(p.reader, inp.root).labels, p.temperature,
                         {"all": np.ones(len(ids), bool)}, Compute.of(p.compute))["all"]
    units = None if ab.linear else select_units(p.replay["units"], Q.shape[1])  # replay costs units x inputs
    df = top_impact_table(impacts(ab, units), Q, p.top_impact["betas"])
    write_table(df, snakemake.output.table, {"model": w.model, "dataset": w.dataset, "layer": w.layer,
                                             "top_impact": p.top_impact, "linear_tail": ab.linear})
    plot_top_impact(df, p.top_impact["betas"], f"{w.model} {w.layer}", snakemake.output.figure)
    live = df[df["computed"] & ~df["dead"]]
    return Outcome(metrics={f"mean_ti_{b}": float(live[f"ti_{b}"].mean()) for b in p.top_impact["betas"]},
                   artifacts=[snakemake.output.figure])


run_rule(snakemake, main)
