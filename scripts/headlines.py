"""The run's headline numbers in one small grouped JSON: DVC's metrics file (`dvc metrics show`)."""
import json

from nexplain.io import write_text
from nexplain.report.run_summary import headline_values
from nexplain.runner import run_rule


def main(snakemake):
    values = headline_values(snakemake.params.config)
    write_text(snakemake.output[0], json.dumps(values, indent=2, sort_keys=True) + "\n")


run_rule(snakemake, main)
