"""Explain one shard of a layer's units with NetDissect, CoEx or Clustered CoEx."""
import pyarrow.parquet as pq

from nexplain.compositional.explain import Settings, explain_layer, summary_metrics, write_table
from nexplain.io import atomic_path
from nexplain.runner import run_rule
from nexplain.tracking.tracking import Outcome


def main(snakemake):
    p, w = snakemake.params, snakemake.wildcards
    settings = Settings(**p.settings)
    table, seconds = explain_layer(snakemake.input.maps, snakemake.input.concepts, settings,
                                   units=p.units, shard=tuple(p.shard), workers=p.threads,
                                   geometry=snakemake.input.geometry)
    write_table(table, snakemake.output[0], {"model": w.model, "dataset": w.dataset, "layer": w.layer,
                                             "settings": p.settings, "shard": p.shard})
    with atomic_path(snakemake.log.seconds) as tmp:
        pq.write_table(seconds, tmp)
    return Outcome(metrics=summary_metrics(table, seconds))


run_rule(snakemake, main)
