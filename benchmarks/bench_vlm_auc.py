"""Zero-shot AUC of a world VLM against its training settings: train, then score the test split.

Usage: python benchmarks/bench_vlm_auc.py [--vlm world_siglip] [--arch NAME_OR_JSON] [--threads 1]
                                          [--device cpu] [key=value ...]   (train settings over config.yaml's)

Needs the default run's world, splits and captions. Trains with `train_clip` exactly as rule
`train_vlm` does (config.yaml's settings, overridden by key=value), then scores zero-shot concept
presence on the test split with `evaluate_vlm`'s functions (the VLM's template over each concept
name, the world's presence labels, ROC AUC per concept), and prints one JSON line: the settings, training seconds, the mean AUC and the mean per
concept group. `--arch` takes another registered config or an open_clip model config JSON file.
Decoded images are cached under benchmarks/.cache (the same for every arch at 112 px).
"""

from __future__ import annotations

import argparse
import json
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
from nexplain.splits import split_masks  # noqa: E402
from nexplain.vlm.vlm import text_embeddings, zero_shot_auc  # noqa: E402

GROUPS = {"colours": "c_color.csv", "shapes": "c_object.csv", "scenes": "c_scene.csv", "textures": "c_texture.csv"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vlm", default="world_siglip")
    ap.add_argument("--arch", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (a search on a GPU; CPU seconds differ)")
    ap.add_argument("overrides", nargs="*", help="train settings, key=value")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import open_clip

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    res = REPO / config["results"]
    spec = config["vlms"][args.vlm]
    arch = args.arch or spec["arch"]
    if arch.endswith(".json"):
        open_clip.add_model_config(Path(arch).parent)
        arch = Path(arch).stem
    cfg = dict(spec["train"])
    cfg.update({k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.overrides)})  # 18 -> int
    dataset = cfg.pop("dataset")
    settings = TrainSettings.from_config(cfg)

    splits = pd.read_parquet(res / dataset / "splits.parquet")
    captions = pd.read_parquet(res / dataset / "captions.parquet").set_index("image_id")
    model, preprocess = new_model(arch, settings.seed)
    cache = REPO / "benchmarks" / ".cache"
    cache.mkdir(exist_ok=True)
    size = model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    x = {}
    for split in ("train", "test"):
        ids = splits["image_id"][splits["split"] == split].to_numpy()
        path = cache / f"{dataset}_{split}_{size}.pt"
        if not path.exists():
            table = open_dataset("broden", res / "datasets" / dataset)
            torch.save(preprocess_images(table, preprocess, ids, progress=False), path)
        x[split] = (ids, torch.load(path))
    train_ids, train_x = x["train"]
    table = captions.loc[train_ids].reset_index()
    concepts = sorted({c for row in table["concepts"] for c in row})

    crops = None
    if settings.crops:
        from nexplain.vlm.crops import training_crops

        crops = training_crops("broden", res / "datasets" / dataset, train_ids, size, settings.crop_size)
    t0 = time.perf_counter()
    model, losses = train_clip(model, arch, train_x, table, concepts, settings, progress=False, device=args.device,
                               crops=crops)
    seconds = time.perf_counter() - t0

    test_ids, test_x = x["test"]
    with torch.no_grad():
        img = torch.cat([model.encode_image(test_x[i:i + 128].to(args.device), normalize=True).cpu()
                         for i in range(0, len(test_x), 128)])
    model.cpu()
    presence = pd.read_parquet(res / dataset / "concepts" / "presence.parquet")
    names = [c for c in presence.columns if c != "image_id"]
    txt = text_embeddings(model, open_clip.get_tokenizer(arch), names, spec["template"])
    test = split_masks(splits, presence["image_id"].to_numpy())["test"]
    table = zero_shot_auc(test_ids, img.float().numpy(), names, txt, presence["image_id"].to_numpy()[test],
                          presence[names].to_numpy()[test], names)
    auc = table.dropna(subset=["auc"]).set_index("concept")["auc"]
    root = res / "datasets" / dataset
    groups = {g: float(auc[auc.index.isin(pd.read_csv(root / f)["name"])].mean())
              for g, f in GROUPS.items() if (root / f).exists()}
    print(json.dumps({"vlm": args.vlm, "arch": arch, "settings": cfg, "threads": args.threads,
                      "device": args.device, "steps": len(losses),
                      "train_s": round(seconds, 1), "mean_auc": round(float(auc.mean()), 4),
                      **{g: round(v, 3) for g, v in groups.items()}}), flush=True)


if __name__ == "__main__":
    main()
