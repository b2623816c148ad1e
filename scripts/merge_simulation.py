"""One layer's simulation scores from its shards (the bytes of a one-shard run), and their means as JSON."""
import json

import numpy as np

from nexplain.io import write_text
from nexplain.linear.scoring import summary
from nexplain.runner import run_rule
from nexplain.tables import write_merged
from nexplain.tracking.tracking import Outcome


def main(snakemake):
    table = write_merged(snakemake.input, snakemake.output.scores,
                         lambda t: np.argsort(t["row"].to_numpy(), kind="stable"), drop=("row",))
    means = summary(table.to_pandas())
    write_text(snakemake.output.summary, json.dumps(means, indent=2, sort_keys=True) + "\n")
    return Outcome(metrics={f"{e}.{k}": v for e, d in means.items() for k, v in d.items() if v is not None})


run_rule(snakemake, main)
