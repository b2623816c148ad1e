"""Bounding boxes and inscribed rectangles of every concept mask, for the MMESH bounds (once per dataset)."""
from nexplain.compositional.store import save_geometry
from nexplain.runner import run_rule


def main(snakemake):
    save_geometry(snakemake.input[0], snakemake.output[0])


run_rule(snakemake, main)
