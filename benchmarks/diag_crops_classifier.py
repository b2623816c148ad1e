"""Diagnosis: how fast an image tower learns the world's concepts, with no text tower.

Usage: python benchmarks/diag_crops_classifier.py [--threads 1] [--steps 2400] [--every 600]
                                                  [--images 16] [--crops 64]

Trains `nexplain_world_cnn` with a free linear head and binary cross-entropy on the 35 concept
labels: each step `--images` whole train images (their presence labels) and `--crops` object
crops (their `nexplain.vlm.crops` concepts), turned and mirrored as the VLM trainer does. Prints the
test-split ROC AUC per concept group every `--every` steps, with the training seconds so far.
`--crops 0` is the whole-image baseline. Needs bench_vlm_auc.py's image cache (run it once).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from nexplain.models.clip import _Crops, _schedule, dihedral  # noqa: E402
from nexplain.models.world_cnn import WorldCNN  # noqa: E402
from nexplain.vlm.crops import training_crops  # noqa: E402

GROUPS = {"colours": "c_color.csv", "shapes": "c_object.csv", "scenes": "c_scene.csv", "textures": "c_texture.csv"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--every", type=int, default=600)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--crops", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res, cache = REPO / "results", REPO / "benchmarks" / ".cache"
    presence = pd.read_parquet(res / "world" / "concepts" / "presence.parquet").set_index("image_id")
    splits = pd.read_parquet(res / "world" / "splits.parquet")
    names = list(presence.columns)
    ids = {s: splits["image_id"][splits["split"] == s].to_numpy() for s in ("train", "test")}
    x = {s: torch.load(cache / f"world_{s}_112.pt") for s in ("train", "test")}
    y_train = torch.tensor(presence.loc[ids["train"]].to_numpy() > 0, dtype=torch.float32)
    y_test = presence.loc[ids["test"]].to_numpy() > 0
    crops = _Crops(training_crops("broden", res / "datasets" / "world", ids["train"], 112, 48), names, 48)

    torch.manual_seed(0)
    net = WorldCNN(num_classes=len(names)).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.05, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, args.steps, 0.1))
    rng = np.random.default_rng(0)
    groups = {g: pd.read_csv(res / "datasets" / "world" / f)["name"].tolist() for g, f in GROUPS.items()}
    seconds = 0.0
    for step in range(args.steps):
        t0 = time.perf_counter()
        loss = torch.zeros(())
        if args.images:
            rows = rng.integers(0, len(x["train"]), args.images)
            with torch.autocast("cpu", torch.bfloat16):
                logits = net(dihedral(x["train"][rows], rng).contiguous(memory_format=torch.channels_last))
            loss = loss + F.binary_cross_entropy_with_logits(logits.float(), y_train[rows])
        if args.crops:
            xc, pick = crops.draw(rng, x["train"], args.crops)
            with torch.autocast("cpu", torch.bfloat16):
                logits = net(dihedral(xc, rng).contiguous(memory_format=torch.channels_last))
            target = torch.from_numpy(crops.present[pick].astype(np.float32))
            loss = loss + F.binary_cross_entropy_with_logits(logits.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        seconds += time.perf_counter() - t0
        if (step + 1) % args.every == 0:
            net.eval()
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
                p = torch.cat([net(x["test"][i:i + 256].contiguous(memory_format=torch.channels_last)).float()
                               for i in range(0, len(x["test"]), 256)]).numpy()
            net.train()
            auc = {c: roc_auc_score(y_test[:, j], p[:, j]) for j, c in enumerate(names)
                   if 0 < y_test[:, j].sum() < len(y_test)}
            print(json.dumps({"step": step + 1, "train_s": round(seconds, 1), "images": args.images,
                              "crops": args.crops, "mean_auc": round(float(np.mean(list(auc.values()))), 4),
                              **{g: round(float(np.mean([auc[c] for c in cs if c in auc])), 3)
                                 for g, cs in groups.items()}}), flush=True)


if __name__ == "__main__":
    main()
