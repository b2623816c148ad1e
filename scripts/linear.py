"""Linear Explanations of one layer's units from one concept matrix."""
import pandas as pd
import torch

from nexplain.activations.read import read_summary
from nexplain.linear.conceptmatrix import read_matrix
from nexplain.linear.linear import LinearSettings, aligned, explain_units, linear_table
from nexplain.runner import run_rule
from nexplain.splits import split_masks
from nexplain.tables import write_table
from nexplain.tracking.tracking import Outcome


def main(snakemake):
    p, w, inp = snakemake.params, snakemake.wildcards, snakemake.input
    torch.set_num_threads(p.threads)
    ids, Q, _ = read_summary(inp.summary)
    p_ids, P, names, meta = read_matrix(inp.matrix)
    P = aligned(ids, p_ids, P, inp.matrix)
    masks = split_masks(pd.read_parquet(inp.splits), ids)
    s = LinearSettings(**p.settings, concept_filter=p.concept_filter)
    exps, keep, W = explain_units(P, Q, masks, s, progress=True, matrix=inp.matrix, activations=inp.summary)
    df = linear_table(exps, names, keep, W)
    write_table(df, snakemake.output[0], {"model": w.model, "dataset": w.dataset, "layer": w.layer,
                                          "source": w.source, "matrix": meta, "settings": p.settings})
    live = df[~df["dead"]]
    return Outcome(metrics={"mean_val_corr": float(live["val_corr"].mean()), "mean_length": float(live["length"].mean()),
                            "dead_units": int(df["dead"].sum()), "unexplained_units": int((live["length"] == 0).sum()),
                            "concepts_kept": int(keep.sum())})


run_rule(snakemake, main)
