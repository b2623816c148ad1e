"""PURE circuits (K-means on relevances) and the per-layer distance correlation with a
reference embedding, with the activation baseline, the second-embedding ceiling and figures."""
import json
import os

import numpy as np

from nexplain.activations.activations import read_summary
from nexplain.data.folder import open_dataset
from nexplain.io import write_text
from nexplain.pure.pure import evaluate, summary
from nexplain.pure.pure_figures import summary_figure, unit_figure
from nexplain.runner import log, run_rule
from nexplain.tables import read_table, write_table
from nexplain.tracking.tracking import Outcome
from nexplain.units import select_units
from nexplain.vlm.vlm import read_embeddings


def _by_image(path, n):
    """(n, D) vectors indexed by image id, from an embeddings table."""
    ids, emb, _ = read_embeddings(path)
    out = np.full((n, emb.shape[1]), np.nan, np.float32)
    out[ids] = emb
    return out


def main(snakemake):
    p, w, inp, out = snakemake.params, snakemake.wildcards, snakemake.input, snakemake.output
    cfg = p.pure
    ids, Q, _ = read_summary(inp.summary)  # baseline: the layer's own activation vectors
    own = np.full((int(ids.max()) + 1, Q.shape[1]), np.nan, np.float32)
    own[ids] = Q
    n = len(own)
    reference = _by_image(inp.reference, n)
    ceiling = _by_image(inp.ceiling, n) if "ceiling" in inp.keys() else None
    t = read_table(inp.relevance, "relevance table")
    relevance, rows = {}, None
    for layer in p.earlier:
        part = t[t["layer"] == layer]
        relevance[layer] = part.filter(regex=r"^c\d{4}$").dropna(axis=1, how="all").to_numpy(np.float64)
        if rows is None:
            pairs = part[["unit", "image_id"]].to_numpy()
            rows = {(int(u), int(i)): r for r, (u, i) in enumerate(pairs)}
            units = np.unique(pairs[:, 0])
            top = np.stack([pairs[pairs[:, 0] == u, 1] for u in units])
    clusters, scores = evaluate(units, top, relevance, rows, reference, ceiling, own, cfg["k"], cfg["seed"])
    table = summary(scores)
    meta = {"model": w.model, "dataset": w.dataset, "layer": w.layer, "reference": p.reference,
            "ceiling": p.ceiling, "k": cfg["k"], "seed": cfg["seed"], "top": cfg["top"]}
    write_table(clusters, out.clusters, meta)
    write_table(scores, out.correlations, meta)
    write_table(table, out.summary, meta)
    best = table.loc[table["corr_mean"].idxmax(), "layer"] if len(table) else None
    log.info("per-layer distance correlation with %s:\n%s", p.reference, table.to_string(index=False))
    metrics = {f"{r.layer}.corr_mean": r.corr_mean for r in table.itertuples()}
    metrics |= {f"{r.layer}.corr_std": r.corr_std for r in table.itertuples()}
    metrics |= {"baseline_mean": float(scores["baseline"].mean()), "ceiling_mean": float(scores["ceiling"].mean())}
    write_text(out.metrics, json.dumps({**metrics, "best_layer": best}, indent=2, sort_keys=True) + "\n")
    summary_figure(out.figure, table, w.layer, p.reference)
    paths = open_dataset(p.reader, inp.root).paths
    show = p.earlier[-1]  # the immediate previous block: the original PURE's choice
    os.makedirs(out.units, exist_ok=True)
    for u in select_units(cfg["figures"], int(units.max()) + 1):
        if u not in units:
            continue
        k = int(np.flatnonzero(units == u)[0])
        idx = [rows[u, int(i)] for i in top[k]]
        labels = {layer: clusters[(clusters["unit"] == u) & (clusters["layer"] == layer)]["cluster"].to_numpy()
                  for layer in p.earlier}
        unit_figure(f"{out.units}/unit_{u:04d}.png", u, top[k], {layer: relevance[layer][idx] for layer in p.earlier}, labels,
                    reference[top[k]], scores[scores["unit"] == u], paths, show)
    return Outcome(metrics=metrics, artifacts=[out.summary, out.figure])


run_rule(snakemake, main)
