"""PURE relevances: Gradient x Activation of earlier layers' channels for each selected unit's
top-M images, for one shard of the selected units (one table; `merge_relevance` joins the shards)."""
import numpy as np
import pyarrow as pa
import torch

from nexplain.activations.read import read_all_maps
from nexplain.compute import Compute
from nexplain.data.folder import open_dataset
from nexplain.data.images import load_image
from nexplain.models.load import load_model
from nexplain.models.manifest import read_manifest
from nexplain.pure.relevance import relevances, top_images
from nexplain.runner import log, run_rule
from nexplain.tables import write_table
from nexplain.units import select_units


def main(snakemake):
    p, w, inp = snakemake.params, snakemake.wildcards, snakemake.input
    torch.set_num_threads(p.threads)
    cfg = p.pure
    ids, maps = read_all_maps(inp.maps)
    units = select_units(cfg["units"], maps.shape[1], tuple(p.shard))
    top = top_images(ids, maps.reshape(*maps.shape[:2], -1).max(2)[:, units], cfg["top"])
    del maps
    pairs = np.array([(u, i) for u, images in zip(units, top) for i in images], np.int64)
    loaded = load_model(read_manifest(inp.manifest)["spec"])
    table = open_dataset(p.reader, inp.root)
    cache = {int(i): loaded.transform(load_image(table.paths[int(i)])) for i in np.unique(pairs[:, 1])}
    log.info("%d units x %d top images = %d pairs, %d distinct images", len(units), top.shape[1], len(pairs), len(cache))
    compute = Compute.of(p.compute)
    rel = relevances(loaded.module, lambda b: torch.stack([cache[int(i)] for i in b]), pairs, w.layer,
                     p.earlier, compute.batch_size, compute=compute)
    # one table for every earlier layer: unit, image_id, layer, then channels (null past a layer's own)
    width = max(r.shape[1] for r in rel.values())
    cols = {"unit": np.tile(pairs[:, 0], len(p.earlier)), "image_id": np.tile(pairs[:, 1], len(p.earlier)),
            "layer": np.repeat(p.earlier, len(pairs))}
    full = np.full((len(p.earlier) * len(pairs), width), np.nan, np.float32)
    for k, layer in enumerate(p.earlier):
        full[k * len(pairs):(k + 1) * len(pairs), :rel[layer].shape[1]] = rel[layer]
    table = pa.table({**{k: pa.array(v) for k, v in cols.items()},
                      **{f"c{j:04d}": pa.array(full[:, j], from_pandas=True) for j in range(width)}})
    write_table(table, snakemake.output[0], {
        "model": w.model, "dataset": w.dataset, "unit_layer": w.layer, "top": cfg["top"],
        "channels": {layer: int(rel[layer].shape[1]) for layer in p.earlier},
        "relevance": "sum_space A_i dz/dA_i, z = 1/2 ||relu(A_k)||^2, L1-normalised over channels"})

run_rule(snakemake, main)
