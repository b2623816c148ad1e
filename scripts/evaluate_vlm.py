"""Zero-shot concept presence (ROC AUC, test split) of a VLM trained here, and its calibration
(a, b) fitted on the train split, stored beside the model."""
import json

import pandas as pd

from nexplain.io import write_text
from nexplain.models.load import load_clip
from nexplain.runner import log, run_rule
from nexplain.splits import split_masks
from nexplain.tables import write_table
from nexplain.tracking.tracking import Outcome
from nexplain.vlm.vlm import fit_calibration, read_embeddings, text_embeddings, zero_shot_auc


def main(snakemake):
    p, inp, out = snakemake.params, snakemake.input, snakemake.output
    model, _, tokenizer = load_clip(p.spec, snakemake.input.get("checkpoint"))
    ids, emb, _ = read_embeddings(inp.embeddings)
    presence = pd.read_parquet(f"{inp.concepts}/presence.parquet")
    names = [c for c in presence.columns if c != "image_id"]
    labels, label_ids = presence[names].to_numpy(), presence["image_id"].to_numpy()
    txt = text_embeddings(model, tokenizer, names, p.template)
    splits = pd.read_parquet(inp.splits)
    train, test = (split_masks(splits, label_ids)[s] for s in ("train", "test"))  # in label order
    cal = fit_calibration(ids, emb, names, txt, label_ids[train], labels[train], names)
    table = zero_shot_auc(ids, emb, names, txt, label_ids[test], labels[test], names)
    write_text(out.calibration, json.dumps({**cal, "template": p.template}, indent=2, sort_keys=True) + "\n")
    write_table(table, out.table, {"vlm": snakemake.wildcards.vlm, "split": "test", "template": p.template})
    scored = table.dropna(subset=["auc"])
    metrics = {"mean_auc": float(scored["auc"].mean()), "min_auc": float(scored["auc"].min()),
               "concepts": len(scored), "a": cal["a"], "b": cal["b"]}
    log.info("zero-shot mean AUC %.4f over %d concepts (test split)", metrics["mean_auc"], len(scored))
    write_text(out.metrics, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return Outcome(metrics=metrics, artifacts=[out.table, out.calibration])


run_rule(snakemake, main)
