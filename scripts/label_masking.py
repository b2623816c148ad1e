"""Label masking scores of one explanation table (runs the model on masked images)."""
import torch

from nexplain.compositional.explain import read_table, write_table
from nexplain.compositional.labelmask import label_masking_table
from nexplain.compositional.store import open_store
from nexplain.compute import Compute
from nexplain.data.folder import open_dataset
from nexplain.models.load import load_model
from nexplain.models.manifest import read_manifest
from nexplain.runner import run_rule
from nexplain.tracking.tracking import Outcome


def main(snakemake):
    p, w, inp = snakemake.params, snakemake.wildcards, snakemake.input
    torch.set_num_threads(p.threads)
    store, names = open_store(inp.concepts, inp.geometry)
    rows = read_table(inp.explanations).to_dict("records")
    table = label_masking_table(load_model(read_manifest(inp.manifest)["spec"]), open_dataset(p.reader, inp.root),
                                w.layer, rows, store, names, clustered=w.method == "clustered", strict=p.strict,
                                n_images=p.label_masking["images"], seed=p.label_masking["seed"],
                                compute=Compute.of(p.compute))
    write_table(table, snakemake.output[0], {"model": w.model, "dataset": w.dataset, "layer": w.layer,
                                             "method": w.method, "label_masking": p.label_masking})
    scores = table.column("label_masking").to_numpy()
    return Outcome(metrics={"mean_label_masking": float(scores.mean()) if len(scores) else 0.0})


run_rule(snakemake, main)
