"""Do the planted concepts move their planted units? Matched pairs drawn by the world's renderer,
on the planted network and, as the sanity row, on the same architecture with random weights."""
import numpy as np
import pandas as pd
import torch

from nexplain.causal.edits import WorldSpecs, sample_test_images
from nexplain.causal.efficacy import concept_effects, planted_efficacy
from nexplain.compositional.store import open_store
from nexplain.data.folder import open_dataset
from nexplain.models.train import class_count, normalizer
from nexplain.runner import run_rule
from nexplain.tables import read_table, write_table
from nexplain.tracking.tracking import Outcome
from nexplain.truth.planted import parse_units
from nexplain.truth.study import by_layer, variant_network


def main(snakemake):
    p, inp, out = snakemake.params, snakemake.input, snakemake.output
    torch.set_num_threads(p.threads)
    _, names = open_store(inp.concepts)
    units = parse_units(p.units, names)
    specs = WorldSpecs(inp.root)
    _, ids = sample_test_images(read_table(inp.splits, "splits table"), p.images, p.seed)
    norm = normalizer(p.base["input"]["mean"], p.base["input"]["std"])

    def prepare(images):
        return norm(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float())

    n_classes = class_count(open_dataset(p.reader, inp.root))
    tables = []
    for variant in ("planted", "random"):
        module = variant_network(variant, p.base, n_classes, inp.checkpoint, p.random_seed).eval()
        effects = {layer: concept_effects(module, prepare, layer, specs, ids, names)[0] for layer in by_layer(units)}
        tables.append(planted_efficacy(units, effects, names, p.min_effect).assign(variant=variant))
    table = pd.concat(tables, ignore_index=True)
    write_table(table, out.table, {"images": [int(i) for i in ids]})
    ok = table[table["n_concepts"] > 0]
    metrics = {f"{v}.{m}": float(g[m].mean()) for v, g in ok.groupby("variant") for m in ("effect", "moved")}
    return Outcome(metrics=metrics, artifacts=[out.table])


run_rule(snakemake, main)
