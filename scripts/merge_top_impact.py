"""One layer's Top Impact table from its shards (the bytes of a one-shard run), with the curve for the report."""
import numpy as np

from nexplain.linear.impact import plot_top_impact
from nexplain.runner import run_rule
from nexplain.tables import write_merged
from nexplain.tracking.tracking import Outcome


def main(snakemake):
    p, w = snakemake.params, snakemake.wildcards
    df = write_merged(snakemake.input, snakemake.output.table,
                      lambda t: np.argsort(t["unit"].to_numpy(), kind="stable")).to_pandas()
    plot_top_impact(df, p.betas, f"{w.model} {w.layer}", snakemake.output.figure)
    live = df[df["computed"] & ~df["dead"]]
    return Outcome(metrics={f"mean_ti_{b}": float(live[f"ti_{b}"].mean()) for b in p.betas},
                   artifacts=[snakemake.output.figure])


run_rule(snakemake, main)
