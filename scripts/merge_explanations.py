"""One layer's explanation table from its shards, and its scores as JSON for `dvc metrics`."""
import json

from nexplain.compositional.explain import merge_tables, write_table
from nexplain.compositional.scores import scores
from nexplain.io import write_text
from nexplain.runner import run_rule
from nexplain.tracking.tracking import Outcome


def main(snakemake):
    w = snakemake.wildcards
    table = merge_tables(snakemake.input)
    write_table(table, snakemake.output.table,
                {"model": w.model, "dataset": w.dataset, "layer": w.layer, "method": w.method,
                 "settings": snakemake.params.settings})
    summary = scores(table)
    write_text(snakemake.output.scores, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return Outcome(metrics=summary, artifacts=[snakemake.output.scores])


run_rule(snakemake, main)
