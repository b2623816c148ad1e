"""Activation tables of one (model, dataset, layer): summary and spatial maps in Parquet."""
from nexplain.activations.activations import extract_activations
from nexplain.compute import Compute
from nexplain.data.folder import open_dataset
from nexplain.models.load import load_model
from nexplain.models.manifest import read_manifest
from nexplain.runner import run_rule


def main(snakemake):
    p, w = snakemake.params, snakemake.wildcards
    man = read_manifest(snakemake.input.manifest)
    compute = Compute.of(p.compute)
    extract_activations(
        load_model(man["spec"]), open_dataset(p.reader, snakemake.input.root), w.layer,
        snakemake.output.summary, snakemake.output.maps,
        batch_size=compute.batch_size, threads=p.threads, reduce=p.reduce, compute=compute,
        max_row_group_bytes=int(p.max_row_group_mb * 2**20),
        metadata={"model": w.model, "dataset": w.dataset, "weights_sha256": man["weights_sha256"]})


run_rule(snakemake, main)
