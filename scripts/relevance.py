"""PURE relevances: Gradient x Activation of earlier layers' channels for each selected unit's
top-M images, for one shard of the selected units (one table; `merge_relevance` joins the shards)."""
import numpy as np
import torch

from nexplain.activations.read import read_peaks
from nexplain.compute import Compute
from nexplain.data.folder import open_dataset
from nexplain.models.load import load_model
from nexplain.models.manifest import read_manifest
from nexplain.pure.relevance import image_loader, relevance_table, relevances, top_pairs
from nexplain.runner import log, run_rule
from nexplain.tables import write_table
from nexplain.units import select_units


def main(snakemake):
    p, w, inp = snakemake.params, snakemake.wildcards, snakemake.input
    torch.set_num_threads(p.threads)
    cfg = p.pure
    ids, peak = read_peaks(inp.maps)
    units = select_units(cfg["units"], peak.shape[1], tuple(p.shard))
    pairs = top_pairs(ids, peak, units, cfg["top"])
    loaded = load_model(read_manifest(inp.manifest)["spec"])
    load = image_loader(open_dataset(p.reader, inp.root), loaded.transform, pairs[:, 1])
    log.info("%d units x %d top images = %d pairs, %d distinct images",
             len(units), min(cfg["top"], len(ids)), len(pairs), len(np.unique(pairs[:, 1])))
    compute = Compute.of(p.compute)
    rel = relevances(loaded.module, load, pairs, w.layer, p.earlier, compute.batch_size, compute=compute)
    write_table(relevance_table(pairs, rel, p.earlier), snakemake.output[0], {
        "model": w.model, "dataset": w.dataset, "unit_layer": w.layer, "top": cfg["top"],
        "channels": {layer: int(rel[layer].shape[1]) for layer in p.earlier},
        "relevance": "sum_space A_i dz/dA_i, z = 1/2 ||relu(A_k)||^2, L1-normalised over channels"})

run_rule(snakemake, main)
