"""Every method on the planted units of one variant of the network (planted, random, shuffled)."""
import numpy as np
import torch

from nexplain.compositional.store import open_store
from nexplain.data.folder import open_dataset
from nexplain.io import atomic_dir, write_npz
from nexplain.linear.conceptmatrix import read_aligned
from nexplain.models.train import class_count, decode_images, normalizer
from nexplain.runner import run_rule
from nexplain.tables import write_table
from nexplain.tracking.tracking import Outcome
from nexplain.truth.planted import parse_units
from nexplain.truth.study import check_channels, explain_variant, split_masks, variant_network


def main(snakemake):
    p, w, inp, out = snakemake.params, snakemake.wildcards, snakemake.input, snakemake.output
    torch.set_num_threads(p.threads)
    store, names = open_store(inp.concepts, inp.geometry)
    units = parse_units(p.units, names)
    table = open_dataset(p.reader, inp.root)
    ids = np.arange(store.n_images)
    matrices = {s: read_aligned(path, ids) for s, path in zip(p.sources, inp.matrices)}
    base = p.base
    module = variant_network(w.variant, base, class_count(table), inp.get("checkpoint"), p.random_seed)
    check_channels(module, units, base["input"]["size"])
    images = decode_images(table, ids, base["input"]["size"])
    maps, tables, seconds = explain_variant(w.variant, module, images, normalizer(base["input"]["mean"], base["input"]["std"]),
                                            units, store, names, matrices, split_masks(table, len(ids)), p.settings,
                                            p.shuffle_seed)
    write_npz(out.maps, maps)
    with atomic_dir(out.explained) as tmp:
        for method, t in tables.items():
            write_table(t, f"{tmp}/{method}.parquet", {"variant": w.variant, "method": method})
    write_table(seconds, out.seconds, {"variant": w.variant})
    return Outcome(metrics={f"seconds_{m}": float(s) for m, s in seconds.groupby("method")["seconds"].sum().items()})


run_rule(snakemake, main)
