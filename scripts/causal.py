"""Counterfactuals of one (model, world dataset, layer): causal efficacy of every explanation and
copy-paste flips, drawn by the world's renderer (docs/causal.md)."""
import pandas as pd
import torch

from nexplain.causal.adversarial import flip_table, gallery_figure
from nexplain.causal.edits import WorldSpecs, sample_test_images
from nexplain.causal.efficacy import (concept_effects, explanation_efficacy, pil_batches, random_baseline,
                                     signed_concepts)
from nexplain.data.concepts import concept_names
from nexplain.data.world import CLASSES
from nexplain.errors import ModelError
from nexplain.linear.tail import Tail
from nexplain.models.load import load_model
from nexplain.models.manifest import read_manifest
from nexplain.runner import run_rule
from nexplain.tables import read_table, write_table
from nexplain.tracking.tracking import Outcome


def main(snakemake):
    p, inp, out, w = snakemake.params, snakemake.input, snakemake.output, snakemake.wildcards
    torch.set_num_threads(p.threads)
    model = load_model(read_manifest(inp.manifest)["spec"])
    specs = WorldSpecs(inp.root)
    names = concept_names(inp.concepts)
    test, ids = sample_test_images(read_table(inp.splits, "splits table"), p.images, p.seed)
    prepare = pil_batches(model.transform)
    effects, _ = concept_effects(model.module, prepare, w.layer, specs, ids, names)
    tables = {m: ("formula", read_table(f, "explanation table")) for m, f in zip(p.formulas, inp.formulas)}
    tables |= {m: ("linear", read_table(f, "explanation table")) for m, f in zip(p.linear, inp.linear)}
    efficacy = pd.concat([explanation_efficacy(m, kind, t, effects, names, p.min_effect)
                          for m, (kind, t) in tables.items()], ignore_index=True)
    first = next(iter(tables), None)
    if first:
        mine = efficacy[efficacy["method"] == first]
        efficacy = pd.concat([efficacy, random_baseline(mine, effects, p.seed, p.min_effect)], ignore_index=True)
    wide = effects.rename(columns=str).rename_axis("concept").reset_index()
    meta = {"model": w.model, "dataset": w.dataset, "layer": w.layer, "images": [int(i) for i in ids]}
    write_table(wide, out.effects, meta)
    write_table(efficacy, out.efficacy, meta)

    try:  # copy-paste needs the class weights of the layer's units: a linear head right after it
        head = Tail(model.module, w.layer).linear
    except ModelError:  # a tail that reads more than the layer (a transformer MLP's residual stream)
        head = None
    source = next((m for m in ("coex", "netdissect", "clustered") if m in tables), None)
    if head is not None and source:
        t = tables[source][1]
        explained = {int(r["unit"]): [c for c, s in signed_concepts("formula", r, names) if s > 0]
                     for _, r in t[t["status"] == "ok"].iterrows()}
        labels = specs.classes[test]
        paste, gallery = flip_table(model.module, prepare, specs, head[0].numpy(), explained, test, labels,
                                    units=p.paste["units"], images=p.paste["images"], seed=p.seed)
        paste.insert(1, "name", [CLASSES[k].name for k in paste["class"]])
    else:
        paste, gallery = pd.DataFrame(columns=["class", "name", "concepts", "images", "flip_explained",
                                               "flip_random", "changed_explained"]), []
    write_table(paste, out.paste, {**meta, "source": source, "linear_head": head is not None})
    gallery_figure(out.gallery, gallery, [c.name for c in CLASSES], dict(zip(paste["class"], paste["concepts"])))
    ok = efficacy[efficacy["n_concepts"] > 0]
    metrics = {f"{m}.effect": float(g["effect"].mean()) for m, g in ok.groupby("method")}
    metrics |= {f"{m}.moved": float(g["moved"].mean()) for m, g in ok.groupby("method")}
    if len(paste):
        metrics |= {"paste.flip_explained": float(paste["flip_explained"].mean()),
                    "paste.flip_random": float(paste["flip_random"].mean())}
    return Outcome(metrics=metrics, artifacts=[out.efficacy, out.paste, out.gallery])


run_rule(snakemake, main)
