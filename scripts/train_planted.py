"""Train the planted model: the base model's recipe, plus the loss that plants `truth.units`."""
import json

from nexplain.compositional.store import open_store
from nexplain.compute import Compute
from nexplain.data.folder import open_dataset
from nexplain.io import write_text
from nexplain.models.train import save_checkpoint
from nexplain.runner import log, run_rule
from nexplain.tables import write_table
from nexplain.tracking.tracking import Outcome
from nexplain.truth.study import train_planted
from nexplain.truth.planted import parse_units, planted_table


def main(snakemake):
    p, inp, out = snakemake.params, snakemake.input, snakemake.output
    store, names = open_store(inp.concepts)
    units = parse_units(p.units, names)
    model, metrics = train_planted(open_dataset(p.reader, inp.root), p.base, units, store, names, p.weight,
                                   p.threads, Compute.of(p.compute))
    log.info("planted model: test accuracy %.3f", metrics["test_accuracy"])
    save_checkpoint(model, out.checkpoint)
    write_text(out.metrics, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    write_table(planted_table(units), out.planted, {"units": len(units), "weight": p.weight})
    return Outcome(metrics={"test_accuracy": metrics["test_accuracy"]}, artifacts=[out.metrics])


run_rule(snakemake, main)
