"""Training time of the world's VLMs on 2 cores, and whether a rerun gives the same weights.

Usage: python benchmarks/bench_vlm_train.py [--vlms world_siglip world_vit] [--threads 2]

Needs the default run (captions, splits, the world, and the checkpoints the pipeline wrote).
Trains each VLM of config.yaml exactly as rule `train_vlm` does (same settings, same train
split, same preprocessing), timing the training loop alone (`train_clip`) and the whole job
body (model construction, image decoding, training); then compares the weights with the
pipeline's checkpoint, tensor by tensor. Target: training at most 3 minutes per model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from nexplain.data.folder import open_dataset  # noqa: E402
from nexplain.models.clip import TrainSettings, new_model, preprocess_images, train_clip  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vlms", nargs="+", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    res = REPO / config["results"]
    from safetensors.torch import load_file

    for name in args.vlms or [v for v, s in config["vlms"].items() if s["source"] == "train"]:
        spec = config["vlms"][name]
        cfg = dict(spec["train"])
        dataset = cfg.pop("dataset")
        settings = TrainSettings.from_config(cfg)
        t_job = time.perf_counter()
        splits = pd.read_parquet(res / dataset / "splits.parquet")
        ids = splits["image_id"][splits["split"] == "train"].to_numpy()
        captions = pd.read_parquet(res / dataset / "captions.parquet").set_index("image_id").loc[ids].reset_index()
        concepts = sorted({c for row in captions["concepts"] for c in row})
        model, preprocess = new_model(spec["arch"], settings.seed)
        images = preprocess_images(open_dataset("broden", res / "datasets" / dataset), preprocess, ids, progress=False)
        t0 = time.perf_counter()
        model, losses = train_clip(model, spec["arch"], images, captions, concepts, settings, progress=False)
        t_train = time.perf_counter() - t0
        t_job = time.perf_counter() - t_job
        saved = load_file(str(res / "vlms" / name / "open_clip_model.safetensors"))
        same = all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
        print(f"{name} ({spec['arch']}, {settings.loss}, {settings.epochs} epochs, {len(losses)} steps of "
              f"{settings.batch_size}): training {t_train:.1f} s, job body {t_job:.1f} s "
              f"(target <= 180 s); loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
              f"weights equal to the pipeline's checkpoint: {same}", flush=True)


if __name__ == "__main__":
    main()
