"""Train one of the world's vision-language models on its captions (train split only)."""
import json

import pandas as pd
import torch

from nexplain.compute import Compute
from nexplain.data.folder import open_dataset
from nexplain.io import write_text
from nexplain.models.clip import (TrainSettings, new_model, preprocess_images, resolve_precision, save_checkpoint,
                                  train_clip)
from nexplain.runner import log, run_rule
from nexplain.tracking.tracking import Outcome
from nexplain.vlm.crops import training_crops


def main(snakemake):
    p, inp = snakemake.params, snakemake.input
    torch.set_num_threads(p.threads)
    settings = TrainSettings.from_config({k: v for k, v in p.train.items() if k != "dataset"})
    splits = pd.read_parquet(inp.splits)
    ids = splits["image_id"][splits["split"] == "train"].to_numpy()
    captions = pd.read_parquet(inp.captions).set_index("image_id").loc[ids].reset_index()
    concepts = sorted({c for row in captions["concepts"] for c in row})
    model, preprocess = new_model(p.arch, settings.seed)
    images = preprocess_images(open_dataset(p.reader, inp.root), preprocess, ids)
    crops = (training_crops(p.reader, inp.root, ids, images.shape[-1], settings.crop_size)
             if settings.crops else None)
    device = Compute.of(p.compute).device
    model, losses = train_clip(model, p.arch, images, captions, concepts, settings, crops=crops, device=device)
    log.info("%s: loss %.4f -> %.4f over %d steps", p.arch, losses[0], losses[-1], len(losses))
    save_checkpoint(model, snakemake.output.checkpoint)
    history = {"arch": p.arch, "settings": p.train, "precision": resolve_precision(settings.precision, device),
               "train_images": len(ids),
               "object_crops": 0 if crops is None else len(crops), "losses": losses}
    write_text(snakemake.output.history, json.dumps(history, indent=1, sort_keys=True) + "\n")
    return Outcome(metrics={"loss": losses, "final_loss": losses[-1]}, artifacts=[snakemake.output.history])


run_rule(snakemake, main)
