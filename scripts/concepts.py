"""Concept tables (presence, pixel share, packed masks) of a Broden-format dataset."""
from nexplain.data.broden import open_broden
from nexplain.data.concepts import build_concept_tables
from nexplain.runner import run_rule


def main(snakemake):
    build_concept_tables(open_broden(snakemake.input.root), snakemake.output[0])


run_rule(snakemake, main)
