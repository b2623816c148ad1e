"""Captions of a Broden-format dataset's images (for training the world's VLMs)."""
import pandas as pd

from nexplain.data.broden import open_broden
from nexplain.runner import run_rule
from nexplain.tables import write_table
from nexplain.vlm.captions import caption_table


def main(snakemake):
    p, inp = snakemake.params, snakemake.input
    presence = pd.read_parquet(f"{inp.concepts}/presence.parquet")
    df = caption_table(open_broden(inp.root), presence, p.captions["variants"], p.captions["seed"])
    write_table(df, snakemake.output[0], {"dataset": snakemake.wildcards.dataset, **p.captions})


run_rule(snakemake, main)
