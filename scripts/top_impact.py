"""Top Impact of one shard of a layer's units (`merge_top_impact` joins the shards and draws the curve)."""
import numpy as np
import torch

from nexplain.activations.read import read_summary
from nexplain.compute import Compute
from nexplain.data.folder import open_dataset
from nexplain.linear.impact import impacts, top_impact_table
from nexplain.linear.scoring import layer_ablations
from nexplain.linear.towers import layer_tail
from nexplain.models.manifest import read_manifest
from nexplain.runner import run_rule
from nexplain.tables import write_table
from nexplain.units import select_units


def main(snakemake):
    p, w, inp = snakemake.params, snakemake.wildcards, snakemake.input
    torch.set_num_threads(p.threads)
    ids, Q, _ = read_summary(inp.summary)
    table = open_dataset(p.reader, inp.root)
    tail, inputs = layer_tail(read_manifest(inp.manifest)["spec"], w.layer, table, p.template)
    ab = layer_ablations(tail, ids, Q, inp.maps, table.labels, p.temperature,
                         {"all": np.ones(len(ids), bool)}, Compute.of(p.compute), inputs)["all"]
    owned = select_units("all", Q.shape[1], tuple(p.shard))
    # replay costs units x inputs: a non-linear tail replays only the configured units
    units = owned if ab.linear else np.intersect1d(select_units(p.replay["units"], Q.shape[1]), owned)
    df = top_impact_table(impacts(ab, units), Q, p.top_impact["betas"])
    write_table(df[df["unit"].isin(owned)], snakemake.output[0],
                {"model": w.model, "dataset": w.dataset, "layer": w.layer,
                 "top_impact": p.top_impact, "linear_tail": ab.linear})


run_rule(snakemake, main)
