"""Simulation scores (correlation, ablation) of every explainer of one layer."""
import json

import pandas as pd
import torch

from nexplain.activations import read_summary
from nexplain.compute import Compute
from nexplain.conceptmatrix import read_matrix
from nexplain.data.folder import open_dataset
from nexplain.io import atomic_path
from nexplain.linear import aligned
from nexplain.models.load import load_model
from nexplain.models.manifest import read_manifest
from nexplain.runner import run_rule
from nexplain.scoring import explanation_rows, layer_ablations, score_rows, summary
from nexplain.simulate import Simulator
from nexplain.splits import split_masks
from nexplain.tables import read_table, write_table
from nexplain.tail import Tail
from nexplain.tracking import Outcome
from nexplain.units import select_units


def main(snakemake):
    p, w, inp = snakemake.params, snakemake.wildcards, snakemake.input
    torch.set_num_threads(p.threads)
    ids, Q, _ = read_summary(inp.summary)
    masks = split_masks(pd.read_parquet(inp.splits), ids)
    s_ids, P, names, _ = read_matrix(inp.simulator)
    sim = Simulator(aligned(ids, s_ids, P, inp.simulator), names)
    tail = Tail(load_model(read_manifest(inp.manifest)["spec"]).module, w.layer)
    cfg = p.simulate
    ablation = layer_ablations(tail, ids, Q, inp.maps, open_dataset(p.reader, inp.root).labels,
                               cfg["temperature"], {"val": masks["val"], "test": masks["test"]}, Compute.of(p.compute))
    rows = pd.concat([explanation_rows(name, read_table(path, "explanation table"))
                      for name, path in zip(p.explainers, inp.explanations)], ignore_index=True)
    replayed = tail.linear is None  # every ablation replays the tail: a unit subset, its own scalings
    scores = score_rows(rows, sim, Q, masks, ablation,
                        cfg["replay"]["scalings"] if replayed else cfg["scalings"], cfg["optim"],
                        select_units(cfg["replay"]["units"], Q.shape[1]) if replayed else None)
    write_table(scores, snakemake.output.scores, {"model": w.model, "dataset": w.dataset, "layer": w.layer,
                                                  "simulate": cfg, "linear_tail": tail.linear is not None})
    means = summary(scores)
    with atomic_path(snakemake.output.summary) as tmp:
        tmp.write_text(json.dumps(means, indent=2, sort_keys=True) + "\n")
    return Outcome(metrics={f"{e}.{k}": v for e, d in means.items() for k, v in d.items() if v is not None})


run_rule(snakemake, main)
