"""Train the planted model: the base model's recipe, plus the loss that plants `truth.units`."""
import json

import torch
import torchvision

from nexplain.compositional.store import open_store
from nexplain.compute import Compute
from nexplain.data.folder import open_dataset
from nexplain.io import write_text
from nexplain.models.train import save_checkpoint, train_classifier
from nexplain.runner import log, run_rule
from nexplain.tables import write_table
from nexplain.tracking.tracking import Outcome
from nexplain.truth.plant import Planting
from nexplain.truth.planted import parse_units, planted_table, planted_targets
from nexplain.truth.study import channels, check_channels


def main(snakemake):
    p, inp, out = snakemake.params, snakemake.input, snakemake.output
    store, names = open_store(inp.concepts)
    units = parse_units(p.units, names)
    m, t = p.base, p.base["train"]
    check_channels(torchvision.models.get_model(m["arch"], weights=None), units, m["input"]["size"])
    plant = Planting(torch.from_numpy(planted_targets(units, store, names)), channels(units), p.weight)
    table = open_dataset(p.reader, inp.root)
    model, metrics = train_classifier(
        table, arch=m["arch"], image_size=m["input"]["size"], mean=m["input"]["mean"], std=m["input"]["std"],
        epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"], weight_decay=t["weight_decay"],
        seed=t["seed"], low_res=t.get("low_res"), threads=p.threads, compute=Compute.of(p.compute), plant=plant)
    log.info("planted model: test accuracy %.3f", metrics["test_accuracy"])
    save_checkpoint(model, out.checkpoint)
    write_text(out.metrics, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    write_table(planted_table(units), out.planted, {"units": len(units), "weight": p.weight})
    return Outcome(metrics={"test_accuracy": metrics["test_accuracy"]}, artifacts=[out.metrics])


run_rule(snakemake, main)
