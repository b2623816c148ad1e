"""Simulation scores (correlation, ablation) of every explainer of one layer, for one shard of its units
(rows keep their position in the layer's table, `row`, for the merge)."""
import numpy as np
import pandas as pd
import torch

from nexplain.activations.read import read_summary
from nexplain.compute import Compute
from nexplain.data.folder import open_dataset
from nexplain.linear.conceptmatrix import read_matrix
from nexplain.linear.linear import aligned
from nexplain.linear.scoring import explanation_rows, layer_ablations, score_rows
from nexplain.linear.simulate import Simulator
from nexplain.linear.towers import layer_tail
from nexplain.models.manifest import read_manifest
from nexplain.runner import run_rule
from nexplain.splits import split_masks
from nexplain.tables import read_table, write_table
from nexplain.units import select_units


def main(snakemake):
    p, w, inp = snakemake.params, snakemake.wildcards, snakemake.input
    torch.set_num_threads(p.threads)
    ids, Q, _ = read_summary(inp.summary)
    masks = split_masks(pd.read_parquet(inp.splits), ids)
    s_ids, P, names, _ = read_matrix(inp.simulator)
    sim = Simulator(aligned(ids, s_ids, P, inp.simulator), names)
    table = open_dataset(p.reader, inp.root)
    tail, inputs = layer_tail(read_manifest(inp.manifest)["spec"], w.layer, table, p.template)
    cfg = p.simulate
    ablation = layer_ablations(tail, ids, Q, inp.maps, table.labels, cfg["temperature"],
                               {"val": masks["val"], "test": masks["test"]}, Compute.of(p.compute), inputs)
    rows = pd.concat([explanation_rows(name, read_table(path, "explanation table"))
                      for name, path in zip(p.explainers, inp.explanations)], ignore_index=True)
    owned = select_units("all", Q.shape[1], tuple(p.shard))
    rows = rows[np.isin(rows["unit"], owned)]
    replayed = tail.linear is None  # every ablation replays the tail: a unit subset, its own scalings
    ablate = np.intersect1d(select_units(cfg["replay"]["units"], Q.shape[1]), owned) if replayed else owned
    scores = score_rows(rows, sim, Q, masks, ablation,
                        cfg["replay"]["scalings"] if replayed else cfg["scalings"], cfg["optim"], ablate)
    scores.insert(0, "row", rows.index.to_numpy())
    write_table(scores, snakemake.output[0], {"model": w.model, "dataset": w.dataset, "layer": w.layer,
                                              "simulate": cfg, "linear_tail": tail.linear is not None})


run_rule(snakemake, main)
