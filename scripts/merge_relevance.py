"""One layer's PURE relevances from its shards (the bytes of a one-shard run): earlier layer by layer, units ascending."""
import numpy as np

from nexplain.runner import run_rule
from nexplain.tables import write_merged


def main(snakemake):
    earlier = {name: k for k, name in enumerate(snakemake.params.earlier)}

    def order(t):
        rank = np.array([earlier[name] for name in t["layer"].to_pylist()])
        return np.lexsort((t["unit"].to_numpy(), rank))  # stable: a unit's top images keep their order

    write_merged(snakemake.input, snakemake.output[0], order)


run_rule(snakemake, main)
