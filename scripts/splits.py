"""The dataset's train / val / test split for Linear Explanations and simulation."""
import pandas as pd

from nexplain.io import atomic_path
from nexplain.runner import run_rule
from nexplain.splits import make_splits
from nexplain.tracking.tracking import Outcome


def main(snakemake):
    p = snakemake.params
    ids = pd.read_parquet(f"{snakemake.input[0]}/presence.parquet", columns=["image_id"])["image_id"]
    table = make_splits(ids.to_numpy(), p.split["fractions"], p.split["seed"])
    with atomic_path(snakemake.output[0]) as tmp:
        table.to_parquet(tmp, index=False)
    counts = table["split"].value_counts()
    return Outcome(metrics={f"n_{s}": int(counts[s]) for s in counts.index})


run_rule(snakemake, main)
