"""Clustered CoEx on one snapshot of a trained model (epoch 0: its random init), for progressive specialization."""
import os

import numpy as np
import torch

from nexplain.compositional.store import open_store
from nexplain.data.folder import open_dataset
from nexplain.models.load import load_model
from nexplain.models.train import class_count, decode_images, normalizer, snapshot_name
from nexplain.runner import log, run_rule
from nexplain.tables import write_table
from nexplain.tracking.tracking import Outcome
from nexplain.truth.explain import formula_tables, unit_maps
from nexplain.units import select_units


def main(snakemake):
    p, w, inp, out = snakemake.params, snakemake.wildcards, snakemake.input, snakemake.output
    torch.set_num_threads(p.threads)
    store, names = open_store(inp.concepts, inp.geometry)
    table = open_dataset(p.reader, inp.root)
    spec, epoch = p.spec, int(w.epoch)
    weights = inp.checkpoint if epoch == spec["train"]["epochs"] else os.path.join(inp.snapshots, snapshot_name(epoch))
    module = load_model({"source": "checkpoint", "arch": spec["arch"], "path": weights,
                         "num_classes": class_count(table), "input": spec["input"]}).module
    images = decode_images(table, np.arange(store.n_images), spec["input"]["size"])
    normalize = normalizer(spec["input"]["mean"], spec["input"]["std"])
    maps = unit_maps(module, images, normalize, {layer: None for layer in p.layers})
    units = {layer: select_units(p.units, m.shape[1]).tolist() for layer, m in maps.items()}
    maps = {layer: m[:, units[layer]] for layer, m in maps.items()}
    log.info("epoch %d: Clustered CoEx on %s", epoch, ", ".join(f"{l} ({len(u)} units)" for l, u in units.items()))
    tables, seconds = formula_tables(maps, units, store, names, {"clustered": p.settings}, methods=("clustered",))
    t = tables["clustered"]
    write_table(t, out.table, {"model": w.model, "dataset": w.dataset, "epoch": epoch})
    return Outcome(metrics={"seconds": float(sum(s["seconds"] for s in seconds)),
                            "mean_iou": float(t.loc[t["status"] == "ok", "iou"].mean())})


run_rule(snakemake, main)
