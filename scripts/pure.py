"""PURE circuits (K-means on relevances) and the per-layer distance correlation with a
reference embedding, with the activation baseline, the second-embedding ceiling and figures."""
import json
import os

import numpy as np
import torch

from nexplain.activations.read import read_summary
from nexplain.data.folder import open_dataset
from nexplain.data.images import load_image
from nexplain.io import write_text
from nexplain.linear.conceptmatrix import read_matrix
from nexplain.models.load import load_model
from nexplain.models.manifest import read_manifest
from nexplain.pure.heatmaps import circuit_channels, circuit_heatmaps
from nexplain.pure.pure import circuit_concepts, evaluate, summary
from nexplain.pure.pure_figures import summary_figure, unit_figure
from nexplain.runner import log, run_rule
from nexplain.tables import read_table, write_table
from nexplain.tracking.tracking import Outcome
from nexplain.units import select_units
from nexplain.vlm.vlm import read_embeddings


def _by_image(ids, values, n):
    """(n, D) float32 rows indexed by image id (NaN where an image has none); ids past n are left out."""
    out = np.full((n, values.shape[1]), np.nan, np.float32)
    keep = ids < n
    out[ids[keep]] = values[keep]
    return out


def _circuit_concepts(clusters, inp, n):
    """Each circuit's best concept from the label matrix; no rows where the dataset has none
    (a NaN presence is never >= the threshold)."""
    if "concepts" not in inp.keys():
        return circuit_concepts(clusters.iloc[:0], np.zeros((n, 0)), [])
    ids, P, names, _ = read_matrix(inp.concepts)
    return circuit_concepts(clusters, _by_image(ids, P, n), names)


def _heatmaps(model, paths, unit, layer, show, R, labels):
    """heatmap(c, images): the pixels circuit c of `show` carries unit `unit` through."""
    def heatmap(c, images):
        x = torch.stack([model.transform(load_image(paths[int(i)])) for i in images])
        return circuit_heatmaps(model.module, x, unit, layer, show, circuit_channels(R[labels == c]))
    return heatmap


def main(snakemake):
    p, w, inp, out = snakemake.params, snakemake.wildcards, snakemake.input, snakemake.output
    cfg = p.pure
    ids, Q, _ = read_summary(inp.summary)  # baseline: the layer's own activation vectors
    n = int(ids.max()) + 1
    own = _by_image(ids, Q, n)
    reference = _by_image(*read_embeddings(inp.reference)[:2], n)
    ceiling = _by_image(*read_embeddings(inp.ceiling)[:2], n) if "ceiling" in inp.keys() else None
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
    named = _circuit_concepts(clusters, inp, n)
    write_table(named, out.circuit_concepts, meta)
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
    shown = [u for u in select_units(cfg["figures"], int(units.max()) + 1) if u in units]
    torch.set_num_threads(1)
    model = load_model(read_manifest(inp.manifest)["spec"]) if shown else None  # for the heatmaps
    for u in shown:
        k = int(np.flatnonzero(units == u)[0])
        idx = [rows[u, int(i)] for i in top[k]]
        labels = {layer: clusters[(clusters["unit"] == u) & (clusters["layer"] == layer)]["cluster"].to_numpy()
                  for layer in p.earlier}
        names = named[(named["unit"] == u) & (named["layer"] == show)]
        unit_figure(f"{out.units}/unit_{u:04d}.png", u, top[k], {layer: relevance[layer][idx] for layer in p.earlier}, labels,
                    reference[top[k]], scores[scores["unit"] == u], paths, show,
                    dict(zip(names["cluster"], zip(names["concept"], names["iou"]))),
                    _heatmaps(model, paths, u, w.layer, show, relevance[show][idx], labels[show]))
    return Outcome(metrics=metrics, artifacts=[out.summary, out.figure])


run_rule(snakemake, main)
