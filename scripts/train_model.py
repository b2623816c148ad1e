"""Train the default model from scratch on the world's classes."""
import json
import os

from nexplain.compute import Compute
from nexplain.data.folder import open_dataset
from nexplain.io import write_text
from nexplain.io import atomic_dir
from nexplain.models.train import save_checkpoint, snapshot_name, train_classifier
from nexplain.runner import log, run_rule
from nexplain.tracking.tracking import Outcome


def main(snakemake):
    p = snakemake.params
    table = open_dataset(p.reader, snakemake.input.root)
    t = p.train
    keep = set(t.get("snapshots", []))
    with atomic_dir(snakemake.output.snapshots) as snapshots:  # the random init and chosen epochs
        def on_epoch(epoch, model):
            if epoch in keep:
                save_checkpoint(model, os.path.join(snapshots, snapshot_name(epoch)))

        model, metrics = train_classifier(
            table, arch=p.arch, image_size=p.input["size"], mean=p.input["mean"], std=p.input["std"],
            epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"], weight_decay=t["weight_decay"],
            seed=t["seed"], low_res=t.get("low_res"), threads=p.threads, compute=Compute.of(p.compute),
            on_epoch=on_epoch)
    acc = metrics["test_accuracy"]  # None without a test split
    log.info("test accuracy %s (chance %.3f)", "n/a" if acc is None else f"{acc:.3f}", metrics["chance"])
    save_checkpoint(model, snakemake.output.checkpoint)
    write_text(snakemake.output.metrics, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    curves = {k: [h[k] for h in metrics["history"]] for k in ("train_loss", "val_accuracy")}
    return Outcome(metrics={"test_accuracy": metrics["test_accuracy"], **curves},
                   artifacts=[snakemake.output.metrics])


run_rule(snakemake, main)
