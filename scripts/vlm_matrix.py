"""The VLM concept matrix P = sigmoid(a (cos + b)) of a dataset over its concept set."""
import json

import numpy as np
import pandas as pd

from nexplain.linear.conceptmatrix import read_matrix, write_matrix
from nexplain.models.load import load_clip
from nexplain.runner import run_rule
from nexplain.tracking.tracking import Outcome
from nexplain.vlm.vlm import concept_matrix, read_concept_set, read_embeddings, text_embeddings


def main(snakemake):
    p, w, inp = snakemake.params, snakemake.wildcards, snakemake.input
    model, _, tokenizer = load_clip(p.spec, snakemake.input.get("checkpoint"))
    concepts = read_concept_set(inp.concept_set)
    txt = text_embeddings(model, tokenizer, concepts, p.template)
    ids, emb, _ = read_embeddings(inp.embeddings)
    label_ids, labels, label_names, _ = read_matrix(inp.labels)
    splits = pd.read_parquet(inp.splits)
    train = np.isin(label_ids, splits["image_id"][splits["split"] == "train"].to_numpy())
    stored = json.loads(open(inp.calibration).read()) if "calibration" in inp.keys() else None
    df, meta = concept_matrix(ids, emb, concepts, txt, label_ids[train], labels[train], label_names, stored)
    write_matrix(df, snakemake.output[0], {**meta, "vlm": w.vlm, "dataset": w.dataset,
                                          "concept_set": inp.concept_set, "template": p.template})
    return Outcome(metrics={"a": meta["calibration"]["a"], "b": meta["calibration"]["b"], "n_concepts": len(concepts)})


run_rule(snakemake, main)
