"""L2-normalised image embeddings of a dataset under one VLM's image tower."""
import torch

from nexplain.compute import Compute
from nexplain.data.folder import open_dataset
from nexplain.models.load import load_clip
from nexplain.runner import run_rule
from nexplain.vlm.vlm import image_embeddings, write_embeddings


def main(snakemake):
    p, w = snakemake.params, snakemake.wildcards
    torch.set_num_threads(p.threads)
    model, preprocess, _ = load_clip(p.spec, snakemake.input.get("checkpoint"))
    compute = Compute.of(p.compute)
    ids, emb = image_embeddings(model, preprocess, open_dataset(p.reader, snakemake.input.root), compute.batch_size,
                                compute=compute)
    write_embeddings(snakemake.output[0], ids, emb, {"vlm": w.vlm, "dataset": w.dataset, **p.spec})


run_rule(snakemake, main)
